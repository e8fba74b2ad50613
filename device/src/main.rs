fn main() {
    env_logger::init();
    log::error!("vcram-device: not implemented yet");
    std::process::exit(1);
}

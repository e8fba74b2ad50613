//! Host-side harness for vcram end-to-end tests.

//! Shared helpers for in-guest programs.

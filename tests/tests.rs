//! Integration tests, one binary (as ripgrep does). Each module is one capability.

mod support;

mod cli;
mod demo;
mod deploy;
mod pack;
mod recipe;
mod remote;

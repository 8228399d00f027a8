//! `sealpush hash` (being written).

use super::{Exit, Globals};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _globals: &Globals) -> anyhow::Result<Exit> {
    anyhow::bail!("`sealpush hash` is not available in this build yet")
}

//! `sealpush deploy` (being written).

use super::{Exit, Globals};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _globals: &Globals) -> anyhow::Result<Exit> {
    anyhow::bail!("`sealpush deploy` is not available in this build yet")
}

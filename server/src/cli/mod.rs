//! The `caskade` command line, one module per kind of command: [`serve`] runs the server,
//! [`client`] talks to a running one (its persistent subscription commands in [`groups`]),
//! [`offline`] works on a stopped store's directory, and [`output`] is how all of them print.
//! `main` parses the arguments and hands each command to the module that owns its kind; the
//! modules never see each other's arguments.

pub(crate) mod client;
pub(crate) mod groups;
pub(crate) mod offline;
mod output;
pub(crate) mod serve;

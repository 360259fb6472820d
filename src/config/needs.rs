//! What a provisioner's routing asks of its target kind. A leaf, so that the
//! kinds' configurations can answer [`Needs`] without importing the
//! provisioner configuration that holds them.

/// The operations a provisioner's routing needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// `provision_group` is set: accounts are looked up, created, updated,
    /// deprovisioned and listed.
    pub accounts: bool,
    /// `target_group_map` is set: groups are listed and their members read,
    /// added and removed.
    pub groups: bool,
}

/// An operation the routing needs that the kind's description lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingOperation {
    /// The table that would describe it, e.g. `rest.accounts.create`.
    pub key: String,
    /// The key that makes it needed: `provision_group` or `target_group_map`.
    pub needed_by: &'static str,
}

impl Needs {
    /// The key of the provisioner file that asks for account operations.
    pub const ACCOUNTS_KEY: &'static str = "provision_group";
    /// The key of the provisioner file that asks for group operations.
    pub const GROUPS_KEY: &'static str = "target_group_map";
}

//! The mass-deprovision guard: a sync that would remove too much of what
//! the target holds is refused before it removes anything, unless an
//! operator re-queued it with the override.

use super::{Engine, Step};
use crate::event::Event;
use crate::target::TargetError;

impl Engine {
    /// The mass-deprovision guard: refuses a sync that would remove more than
    /// the configured share of the managed remote entries (from
    /// `removal_guard_min` entries on), or more than `max_removals` of them
    /// however many there are. An operator who re-queued the event with
    /// `--allow-removals` has looked at the numbers: the sync proceeds, loudly.
    pub(super) fn guard_removals(
        &self,
        event: &Event,
        what: &str,
        removing: usize,
        managed: usize,
    ) -> Step<()> {
        if removing == 0 {
            return Ok(());
        }
        let share = removing as f64 / managed.max(1) as f64;
        let mut exceeded = Vec::new();
        if managed >= self.removal_guard_min && share > self.max_removal_share {
            exceeded.push(("max_removal_share", self.max_removal_share.to_string()));
        }
        if self.max_removals > 0 && removing > self.max_removals {
            exceeded.push(("max_removals", self.max_removals.to_string()));
        }
        if exceeded.is_empty() {
            return Ok(());
        }
        if event.allow_removals {
            tracing::warn!(
                provisioner = %self.name,
                event_id = %event.id,
                entries = what,
                removing,
                managed,
                max_removal_share = self.max_removal_share,
                max_removals = self.max_removals,
                "mass-deprovision guard overridden by operator: removing {removing} of {managed} {what}"
            );
            return Ok(());
        }
        let limits: Vec<String> = exceeded
            .iter()
            .map(|(key, value)| format!("more than {key} = {value}"))
            .collect();
        let keys: Vec<&str> = exceeded.iter().map(|(key, _)| *key).collect();
        Err(TargetError::permanent(format!(
            "refused by the mass-deprovision guard: this sync would remove {removing} of {managed} {what} ({:.0}%, {}); nothing was removed. If the removal is intended, raise {} in the provisioner's configuration, or re-queue this event with `provisioner dead-letters requeue --provisioner {} --allow-removals`",
            share * 100.0,
            limits.join(" and "),
            keys.join(" and "),
            self.name
        )))
    }
}

//! Templates (minijinja syntax) used by the declarative `rest` kind and by
//! `on_behalf_of`. URL templates percent-encode every interpolated value for
//! its position; body templates are rendered leaf by leaf into JSON values.

use minijinja::{Environment, UndefinedBehavior};

/// Checks that `source` is a valid template.
pub fn check_syntax(source: &str) -> Result<(), String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Renders a one-off template with the given context (no escaping).
pub fn render_str(source: &str, ctx: &minijinja::Value) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.render_str(source, ctx).map_err(|e| e.to_string())
}

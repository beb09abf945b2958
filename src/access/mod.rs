//! Who may do what on a route: the `[[routes.allow]]` rules, and the few facts about a
//! verified token they read (its scopes, its roles, the claims the rules name).
//!
//! A shared leaf: config builds the rules, auth extracts the [`Grants`] once per verified
//! token (so a cached token is not parsed again), and the pipeline asks [`AccessRules::check`]
//! after revocation. Nothing here imports another part of the crate.

pub mod grants;
pub mod rules;

pub use grants::{ClaimPath, GrantSpec, Grants, Scalar};
pub use rules::{AccessRules, Denied, Rule};

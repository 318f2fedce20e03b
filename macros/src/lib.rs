//! Procedural macros for farcall. Use them through the `farcall` crate, which
//! re-exports them and documents what they generate.
//!
//! The attribute runs in phases: syn parses the trait, `model` builds a small model
//! of it that keeps references to the original syntax (for spans), `check` applies
//! one function per rule and collects every violation, and `expand` writes the
//! trait, the client and the server (or, on an error, the trait, stand-ins for the
//! client and server, and the errors).

use proc_macro::TokenStream;
use syn::ItemTrait;

mod check;
mod errors;
mod expand;
mod hash;
mod model;

/// Turns a trait into a remote interface. See the `farcall` crate for what is
/// generated and which signatures are accepted.
#[proc_macro_attribute]
pub fn remote(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = match syn::parse::<ItemTrait>(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error().into(),
    };
    let mut errors = errors::Errors::default();
    let model = model::RemoteTrait::new(args.into(), &item, &mut errors);
    check::check(&model, &mut errors);
    match errors.finish() {
        Ok(()) => expand::expand(&model),
        Err(error) => expand::fallback(&model, &error),
    }
    .into()
}

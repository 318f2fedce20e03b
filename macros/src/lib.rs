//! Procedural macros for farcall. Use them through the `farcall` crate, which
//! re-exports them and documents what they generate.
//!
//! The attribute runs in three phases: [`model`] parses the trait into a small model
//! that keeps references to the original syntax (for spans), [`check`] applies one
//! function per rule and collects every violation, and [`expand`] writes the trait,
//! the client and the server.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::ToTokens;
use syn::ItemTrait;

mod check;
mod expand;
mod hash;
mod model;

/// Turns a trait into a remote interface. See the `farcall` crate for what is
/// generated and which signatures are accepted.
#[proc_macro_attribute]
pub fn remote(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut item = match syn::parse::<ItemTrait>(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error().into(),
    };
    let args = TokenStream2::from(args);
    match remote_impl(args, &item) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // Keep the user's trait (minus our inert attributes) so later errors and
            // IDEs still see it, next to the explanation of what to change.
            model::strip_farcall_attrs(&mut item);
            let mut tokens = item.into_token_stream();
            tokens.extend(error.to_compile_error());
            tokens.into()
        }
    }
}

fn remote_impl(args: TokenStream2, item: &ItemTrait) -> syn::Result<TokenStream2> {
    check::attribute_args(args)?;
    let model = model::RemoteTrait::parse(item)?;
    Ok(expand::expand(&model))
}

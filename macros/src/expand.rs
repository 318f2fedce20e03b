//! Expansion: one function per generated item, joined here.
//!
//! Generated code names everything through `::farcall::__private` so it works under
//! `#![no_implicit_prelude]`, beside a user type called `Result`, and without the user
//! depending on anything but `farcall`. It never names the user's arguments next to
//! its own locals (the server passes them on by position), so no argument name can
//! clash with them.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use crate::model::{RemoteMethod, RemoteTrait, Ret};

mod client;
mod server;
mod trait_def;
mod travels;
mod typescript;

pub(crate) fn expand(model: &RemoteTrait<'_>) -> TokenStream {
    let names = Names::new(model);
    let assertion = travels::assertion(model);
    let trait_def = trait_def::expand(model);
    let client = client::expand(model, &names);
    let server = server::expand(model, &names);
    let typescript = typescript::expand(model, &names);
    quote! {
        #assertion
        #trait_def
        #client
        #server
        #typescript
    }
}

/// What a trait that breaks a rule expands to: the trait as it would be generated,
/// stand-ins for the client and server (so code that names them reports nothing
/// more), and the errors, each at its span.
pub(crate) fn fallback(model: &RemoteTrait<'_>, error: &syn::Error) -> TokenStream {
    let names = Names::new(model);
    let trait_def = trait_def::expand(model);
    let client = client::stub(model, &names);
    let server = server::stub(model, &names);
    let errors = error.to_compile_error();
    quote! {
        #trait_def
        #client
        #server
        #errors
    }
}

/// Names of the generated items.
pub(crate) struct Names {
    pub(crate) client: Ident,
    pub(crate) server: Ident,
}

impl Names {
    fn new(model: &RemoteTrait<'_>) -> Self {
        let span = model.item.ident.span();
        Names {
            client: format_ident!("{}Client", model.name, span = span),
            server: format_ident!("{}Server", model.name, span = span),
        }
    }
}

/// The runtime `Shape` marker type of a method.
pub(crate) fn shape(method: &RemoteMethod<'_>) -> TokenStream {
    match &method.ret {
        Ret::Unit => quote!(::farcall::__private::Plain<()>),
        Ret::Plain(ty) => quote!(::farcall::__private::Plain<#ty>),
        Ret::Fallible { ok, err } => quote!(::farcall::__private::Fallible<#ok, #err>),
    }
}

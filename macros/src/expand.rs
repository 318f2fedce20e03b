//! Expansion: one function per generated item, joined here.
//!
//! Generated code names everything through `::farcall::__private` so it works under
//! `#![no_implicit_prelude]`, beside a user type called `Result`, and without the user
//! depending on anything but `farcall`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use crate::model::{RemoteMethod, RemoteTrait, Ret};

mod client;
mod server;
mod trait_def;
mod travels;

pub(crate) fn expand(model: &RemoteTrait<'_>) -> TokenStream {
    let names = Names::new(model);
    let assertion = travels::assertion(model);
    let trait_def = trait_def::expand(model);
    let client = client::expand(model, &names);
    let server = server::expand(model, &names);
    quote! {
        #assertion
        #trait_def
        #client
        #server
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

/// The tuple type of a method's arguments.
pub(crate) fn args_tuple_type(method: &RemoteMethod<'_>) -> TokenStream {
    let types = method.args.iter().map(|a| a.ty);
    quote!((#(#types,)*))
}

/// The tuple of a method's argument names (as a value or a pattern).
pub(crate) fn args_tuple(method: &RemoteMethod<'_>) -> TokenStream {
    let names = method.args.iter().map(|a| a.name);
    quote!((#(#names,)*))
}

//! The user's trait, restated with `Send` futures and `Send + Sync + 'static` bounds.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{parse_quote, TraitItem};

use crate::model::{is_farcall_attr, RemoteTrait};

/// Also used when the trait breaks a rule, so it only restates what it can: a method
/// that is not `async` stays as written, which is what its implementations match.
pub(crate) fn expand(model: &RemoteTrait<'_>) -> TokenStream {
    let mut item = model.item.clone();
    item.supertraits
        .push(parse_quote!(::farcall::__private::Send));
    item.supertraits
        .push(parse_quote!(::farcall::__private::Sync));
    item.supertraits.push(parse_quote!('static));
    for trait_item in &mut item.items {
        let TraitItem::Fn(method) = trait_item else {
            continue;
        };
        method.attrs.retain(|a| !is_farcall_attr(a));
        let sig = &mut method.sig;
        if sig.asyncness.take().is_none() {
            continue;
        }
        let output = match &sig.output {
            syn::ReturnType::Default => quote!(()),
            syn::ReturnType::Type(_, ty) => quote!(#ty),
        };
        sig.output = parse_quote! {
            -> impl ::farcall::__private::Future<Output = #output> + ::farcall::__private::Send
        };
        if let Some(body) = &method.default {
            method.default = Some(parse_quote!({ async move #body }));
        }
    }
    quote!(#item)
}

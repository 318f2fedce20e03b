//! How a type without `Serialize`/`Deserialize` is reported: once, on the user's
//! type, in farcall's words. A static assertion per type raises the error; bounds on
//! the generated items keep their bodies from raising it again, on the attribute, in
//! terms of argument tuples and runtime functions.

use std::collections::HashSet;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Type;

use crate::model::RemoteTrait;

/// `const _: () = { assert_travels::<T>(); ... };` for every distinct argument and
/// result type. Each call carries its type's span, so rustc reports the message of
/// `Travels` there.
pub(crate) fn assertion(model: &RemoteTrait<'_>) -> TokenStream {
    let checks = distinct(model.wire_types()).into_iter().map(|ty| {
        quote_spanned! {ty.span()=>
            ::farcall::__private::assert_travels::<#ty>();
        }
    });
    quote! {
        const _: () = {
            #(#checks)*
        };
    }
}

/// `where for<'__x> T: Travels, ...` for an item that serializes or deserializes
/// `types`: inside it every use of them type-checks, so a type that cannot travel is
/// reported by the assertion alone. The otherwise unneeded `for<'__x>` keeps rustc
/// from checking the bound where it is written (a bound that names no generic
/// parameter is checked at once, and would be reported a second time); callers check
/// it, and it holds whenever the assertion does.
pub(crate) fn bounds<'a>(types: impl IntoIterator<Item = &'a Type>) -> TokenStream {
    let types = distinct(types);
    if types.is_empty() {
        return TokenStream::new();
    }
    let bounds = types.into_iter().map(|ty| {
        quote_spanned! {ty.span()=>
            for<'__x> #ty: ::farcall::__private::Travels,
        }
    });
    quote!(where #(#bounds)*)
}

/// The types in order of first appearance, each once (compared as written).
pub(crate) fn distinct<'a>(types: impl IntoIterator<Item = &'a Type>) -> Vec<&'a Type> {
    let mut seen = HashSet::new();
    types
        .into_iter()
        .filter(|ty| seen.insert(ty.to_token_stream().to_string()))
        .collect()
}

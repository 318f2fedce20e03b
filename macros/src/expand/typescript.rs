//! The TypeScript declarations of a trait (feature `typescript` of the runtime): a
//! list of its methods and types, handed to the runtime's `__typescript_client!`,
//! which expands to nothing without the feature.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Expr, Lit, Meta};

use super::{travels, Names};
use crate::model::{RemoteTrait, Ret};

pub(crate) fn expand(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let client = &names.client;
    let name = &model.name;
    let doc = doc_text(&model.item.attrs);
    let methods = model.methods.iter().map(|m| {
        let method = &m.name;
        let doc = doc_text(&m.item.attrs);
        let args = m.args.iter().map(|a| {
            let (arg, ty) = (syn::ext::IdentExt::unraw(&a.name).to_string(), a.ty);
            quote!((#arg, #ty))
        });
        let returns = match (&m.ret, m.options.oneway) {
            (Ret::Unit, _) | (_, true) => quote!(unit),
            (Ret::Plain(ty), false) => quote!(plain(#ty)),
            (Ret::Fallible { ok, .. }, false) => quote!(fallible(#ok)),
        };
        quote!({ #method, #doc, [#(#args),*], #returns })
    });
    let wire = travels::distinct(model.methods.iter().flat_map(|m| {
        let ok = match m.ret {
            Ret::Unit => None,
            Ret::Plain(ty) | Ret::Fallible { ok: ty, .. } => Some(ty),
        };
        m.args.iter().map(|a| a.ty).chain(ok)
    }));
    quote! {
        ::farcall::__typescript_client! {
            #client, #name, #doc, [#(#methods)*], [#(#wire),*]
        }
    }
}

/// The text of the `///` comments among `attrs`, one line each, without the space
/// after `///`.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Str(text) => Some(text.value()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_owned())
        .collect();
    lines.join("\n")
}

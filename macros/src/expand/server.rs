//! `{Trait}Server<T>`: serves any implementation of the trait.

use proc_macro2::TokenStream;
use quote::quote;
use syn::Index;

use super::{shape, travels, Names};
use crate::model::{RemoteMethod, RemoteTrait, Ret};

/// How a method's application error is put in words for calls pipelined on it: by
/// `Display`, else `Debug`, else its type name (see `__private::ErrorText`).
fn error_text(method: &RemoteMethod<'_>) -> TokenStream {
    match &method.ret {
        Ret::Fallible { ok, err } => quote! {
            |__value: &::farcall::__private::Result<#ok, #err>| {
                #[allow(unused_imports)]
                use ::farcall::__private::{ViaDebug as _, ViaDisplay as _, ViaTypeName as _};
                match __value {
                    ::farcall::__private::Result::Err(__error) => ::core::option::Option::Some(
                        (&&&::farcall::__private::ErrorText(__error)).error_text(),
                    ),
                    ::farcall::__private::Result::Ok(_) => ::core::option::Option::None,
                }
            }
        },
        Ret::Unit | Ret::Plain(_) => quote!(::farcall::__private::no_error_text),
    }
}

/// The dispatch arm of one method. The arguments arrive as one tuple and are passed
/// on by position, so the user's argument names never meet the locals here.
fn arm(model: &RemoteTrait<'_>, index: usize, m: &RemoteMethod<'_>) -> TokenStream {
    let trait_ident = &model.item.ident;
    let (id, ident) = (m.id, &m.item.sig.ident);
    let shape = shape(m);
    let types = m.args.iter().map(|a| a.ty);
    let positions = (0..m.args.len()).map(Index::from);
    let cancel = if m.options.no_cancel {
        quote!(::farcall::__private::Cancel::RunToCompletion)
    } else {
        quote!(::farcall::__private::Cancel::OnDrop)
    };
    let describe = error_text(m);
    quote! {
        #id => __call.handle::<#shape, _, _, _>(
            &__methods[#index],
            #cancel,
            #describe,
            move |__args: (#(#types,)*)| async move {
                <__T as #trait_ident>::#ident(&*__this, #(__args.#positions),*).await
            },
        ),
    }
}

pub(crate) fn expand(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let trait_ident = &model.item.ident;
    let (client, server) = (&names.client, &names.server);
    let definition = definition(model, names, &quote!(__T: #trait_ident));
    let bounds = travels::bounds(model.wire_types());
    let arms = model
        .methods
        .iter()
        .enumerate()
        .map(|(index, m)| arm(model, index, m));
    quote! {
        #definition

        #[automatically_derived]
        impl<__T: #trait_ident> ::farcall::__private::Dispatch for #server<__T> #bounds {
            fn interface(&self) -> &'static ::farcall::__private::Interface {
                <#client as ::farcall::__private::RemoteClient>::INTERFACE
            }

            fn dispatch(&self, __call: ::farcall::__private::Incoming) -> ::farcall::__private::Handler {
                let __this = ::farcall::__private::Clone::clone(&self.0);
                let __methods = <#client as ::farcall::__private::RemoteClient>::INTERFACE.methods;
                match __call.method() {
                    #(#arms)*
                    _ => __call.method_not_found(<#client as ::farcall::__private::RemoteClient>::INTERFACE),
                }
            }
        }
    }
}

/// A stand-in for when the trait breaks a rule: a server that takes any object and
/// answers every call with "method not found", so code that builds one reports
/// nothing more.
pub(crate) fn stub(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let (client, server) = (&names.client, &names.server);
    let definition = definition(model, names, &quote!(__T));
    quote! {
        #definition

        #[automatically_derived]
        impl<__T: ::farcall::__private::Send + ::farcall::__private::Sync + 'static>
            ::farcall::__private::Dispatch for #server<__T>
        {
            fn interface(&self) -> &'static ::farcall::__private::Interface {
                <#client as ::farcall::__private::RemoteClient>::INTERFACE
            }

            fn dispatch(&self, __call: ::farcall::__private::Incoming) -> ::farcall::__private::Handler {
                __call.method_not_found(<#client as ::farcall::__private::RemoteClient>::INTERFACE)
            }
        }
    }
}

/// The struct, its constructors (for `param`, the implementation type with its
/// bound) and `Clone`, which needs none of `T`.
fn definition(model: &RemoteTrait<'_>, names: &Names, param: &TokenStream) -> TokenStream {
    let vis = &model.item.vis;
    let server = &names.server;
    let doc = format!(
        "Serves an implementation of [`{}`]: pass `{server}::new(imp)` to `Builder::root`.",
        model.name
    );
    quote! {
        #[doc = #doc]
        #vis struct #server<__T>(::farcall::__private::Arc<__T>);

        impl<#param> #server<__T> {
            /// Wraps an implementation to be served.
            pub fn new(imp: __T) -> Self {
                #server(::farcall::__private::Arc::new(imp))
            }

            /// Serves an implementation that is already shared.
            pub fn from_arc(imp: ::farcall::__private::Arc<__T>) -> Self {
                #server(imp)
            }
        }

        #[automatically_derived]
        impl<__T> ::farcall::__private::Clone for #server<__T> {
            fn clone(&self) -> Self {
                #server(::farcall::__private::Clone::clone(&self.0))
            }
        }
    }
}

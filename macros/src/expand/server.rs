//! `{Trait}Server<T>`: serves any implementation of the trait.

use proc_macro2::TokenStream;
use quote::quote;

use super::{args_tuple, args_tuple_type, shape, travels, Names};
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

pub(crate) fn expand(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let vis = &model.item.vis;
    let trait_ident = &model.item.ident;
    let (client, server) = (&names.client, &names.server);
    let doc = format!(
        "Serves an implementation of [`{}`]: pass `{server}::new(imp)` to `Builder::root`.",
        model.name
    );
    let bounds = travels::bounds(model.wire_types());
    let arms = model.methods.iter().enumerate().map(|(index, m)| {
        let (id, ident) = (m.id, &m.item.sig.ident);
        let shape = shape(m);
        let pattern = args_tuple(m);
        let args = m.args.iter().map(|a| a.name);
        let tuple_type = args_tuple_type(m);
        let cancel = if m.no_cancel {
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
                move |#pattern: #tuple_type| async move {
                    <__T as #trait_ident>::#ident(&*__this, #(#args),*).await
                },
            ),
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #server<__T>(::farcall::__private::Arc<__T>);

        impl<__T: #trait_ident> #server<__T> {
            /// Wraps an implementation to be served.
            pub fn new(imp: __T) -> Self {
                #server(::farcall::__private::Arc::new(imp))
            }

            /// Serves an implementation that is already shared.
            pub fn from_arc(imp: ::farcall::__private::Arc<__T>) -> Self {
                #server(imp)
            }
        }

        impl<__T> ::farcall::__private::Clone for #server<__T> {
            fn clone(&self) -> Self {
                #server(::farcall::__private::Clone::clone(&self.0))
            }
        }

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

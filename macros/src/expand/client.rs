//! `{Trait}Client`: the typed reference to a remote object.

use proc_macro2::TokenStream;
use quote::quote;

use super::{args_tuple, shape, travels, Names};
use crate::model::{RemoteMethod, RemoteTrait, Ret};

pub(crate) fn expand(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let vis = &model.item.vis;
    let client = &names.client;
    let server = &names.server;
    let trait_ident = &model.item.ident;
    let from_local_doc = "A reference to a local implementation, which behaves exactly like a \
         remote one: pass it in calls and peers get a remote reference to it.";
    let name = &model.name;
    let fingerprint = model.fingerprint();
    let client_name = client.to_string();
    let method_infos = model.methods.iter().map(|m| {
        let (method, id) = (&m.name, m.id);
        quote!(::farcall::__private::Method { interface: #name, name: #method, id: #id })
    });
    let methods = model
        .methods
        .iter()
        .enumerate()
        .map(|(index, m)| method(m, index));
    let doc = format!(
        "A reference to a remote [`{name}`]: cheap to clone, usable from any task. \
         Get one with `Connection::root` or receive it from a call."
    );
    quote! {
        #[doc = #doc]
        #vis struct #client {
            __client: ::farcall::__private::Client,
        }

        impl ::farcall::__private::Clone for #client {
            fn clone(&self) -> Self {
                #client { __client: ::farcall::__private::Clone::clone(&self.__client) }
            }
        }

        impl ::farcall::__private::fmt::Debug for #client {
            fn fmt(&self, f: &mut ::farcall::__private::fmt::Formatter<'_>) -> ::farcall::__private::fmt::Result {
                f.debug_tuple(#client_name).field(&self.__client).finish()
            }
        }

        impl ::farcall::__private::PartialEq for #client {
            fn eq(&self, other: &Self) -> bool {
                self.__client == other.__client
            }
        }

        impl ::farcall::__private::Eq for #client {}

        impl ::farcall::__private::Hash for #client {
            fn hash<__H: ::farcall::__private::Hasher>(&self, state: &mut __H) {
                ::farcall::__private::Hash::hash(&self.__client, state)
            }
        }

        impl ::farcall::__private::serde::Serialize for #client {
            fn serialize<__S: ::farcall::__private::serde::Serializer>(
                &self,
                serializer: __S,
            ) -> ::farcall::__private::Result<__S::Ok, __S::Error> {
                ::farcall::__private::serialize_client(&self.__client, serializer)
            }
        }

        impl<'de> ::farcall::__private::serde::Deserialize<'de> for #client {
            fn deserialize<__D: ::farcall::__private::serde::Deserializer<'de>>(
                deserializer: __D,
            ) -> ::farcall::__private::Result<Self, __D::Error> {
                ::farcall::__private::Result::map(
                    ::farcall::__private::deserialize_client(deserializer),
                    |client| #client { __client: client },
                )
            }
        }

        impl ::farcall::__private::RemoteClient for #client {
            const INTERFACE: &'static ::farcall::__private::Interface = &::farcall::__private::Interface {
                name: #name,
                fingerprint: #fingerprint,
                methods: &[#(#method_infos),*],
            };
            fn from_client(client: ::farcall::__private::Client) -> Self {
                #client { __client: client }
            }
            fn client(&self) -> &::farcall::__private::Client {
                &self.__client
            }
        }

        impl #client {
            #[doc = #from_local_doc]
            pub fn from_local<__T: #trait_ident>(imp: __T) -> Self
            where
                #server<__T>: ::farcall::__private::Dispatch,
            {
                #client { __client: ::farcall::__private::Client::from_local(#server::new(imp)) }
            }

            #(#methods)*
        }
    }
}

fn method(m: &RemoteMethod<'_>, index: usize) -> TokenStream {
    let ident = &m.item.sig.ident;
    let docs = m.item.attrs.iter().filter(|a| a.path().is_ident("doc"));
    let params = m.args.iter().map(|a| {
        let (name, ty) = (a.name, a.ty);
        quote!(#name: #ty)
    });
    let args = args_tuple(m);
    let bounds = travels::bounds(m.wire_types());
    let info = quote! {
        &<Self as ::farcall::__private::RemoteClient>::INTERFACE.methods[#index]
    };
    if m.oneway {
        return quote! {
            #(#docs)*
            ///
            /// One-way: sent without waiting for the peer; fails only if it cannot be sent.
            pub fn #ident(&self, #(#params),*) -> ::farcall::__private::Result<(), ::farcall::__private::RpcError> #bounds {
                self.__client.send(#info, &#args)
            }
        };
    }
    let output = match &m.ret {
        Ret::Unit => quote!(::farcall::__private::Promise<()>),
        Ret::Plain(ty) => quote!(::farcall::__private::Promise<#ty>),
        Ret::Fallible { ok, err } => quote!(::farcall::__private::TryPromise<#ok, #err>),
    };
    let shape = shape(m);
    quote! {
        #(#docs)*
        pub fn #ident(&self, #(#params),*) -> #output #bounds {
            self.__client.call::<_, #shape>(#info, &#args)
        }
    }
}

//! `{Trait}Client`: the typed reference to a remote object.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{parse_quote, Attribute, GenericParam, Generics, WherePredicate};

use super::{shape, travels, Names};
use crate::model::{RemoteMethod, RemoteTrait, Ret};

pub(crate) fn expand(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let client = &names.client;
    let server = &names.server;
    let trait_ident = &model.item.ident;
    let from_local_doc = "A reference to a local implementation, which behaves exactly like a \
         remote one: pass it in calls and peers get a remote reference to it.";
    let name = &model.name;
    let fingerprint = model.fingerprint();
    let method_infos = model.methods.iter().map(|m| {
        let (method, id) = (&m.name, m.id);
        quote!(::farcall::__private::Method { interface: #name, name: #method, id: #id })
    });
    let interface = quote! {
        ::farcall::__private::Interface {
            name: #name,
            fingerprint: #fingerprint,
            methods: &[#(#method_infos),*],
        }
    };
    let definition = definition(model, names);
    let remote_client = remote_client(names, &interface);
    let methods = model
        .methods
        .iter()
        .enumerate()
        .map(|(index, m)| method(m, index));
    quote! {
        #definition
        #remote_client

        impl #client {
            #[doc = #from_local_doc]
            pub fn from_local<__T: #trait_ident>(imp: __T) -> Self
            where
                #server<__T>: ::farcall::__private::Dispatch,
            {
                #client(::farcall::__private::Client::from_local(#server::new(imp)))
            }

            #(#methods)*
        }
    }
}

/// A stand-in for when the trait breaks a rule: a client type whose methods accept
/// the calls made to them whatever is wrong with their signatures, so that code which
/// names it, gets one from a connection or calls it reports nothing more.
pub(crate) fn stub(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let client = &names.client;
    let name = &model.name;
    let interface = quote! {
        ::farcall::__private::Interface { name: #name, fingerprint: 0, methods: &[] }
    };
    let definition = definition(model, names);
    let remote_client = remote_client(names, &interface);
    let methods = model.methods.iter().map(|m| stub_method(model, m));
    quote! {
        #definition
        #remote_client

        impl #client {
            #(#methods)*
        }
    }
}

/// A method with the argument types and the `.await` output of the real one, but no
/// bounds on them (which could fail) and the generics of the trait and the method (which
/// the types may name). It is never called: the crate does not compile.
fn stub_method(model: &RemoteTrait<'_>, m: &RemoteMethod<'_>) -> TokenStream {
    let ident = &m.item.sig.ident;
    let docs = carried_attrs(m);
    let generics = stub_generics(&model.item.generics, &m.item.sig.generics);
    let where_clause = &generics.where_clause;
    let types = m.args.iter().map(|a| a.ty);
    if m.options.oneway {
        return quote! {
            #(#docs)*
            pub fn #ident #generics (&self, #(_: #types),*) -> ::farcall::__private::Result<(), ::farcall::__private::RpcError> #where_clause {
                ::farcall::__private::Result::Ok(())
            }
        };
    }
    let output = match &m.ret {
        Ret::Unit => quote!(::farcall::__private::Result<(), ::farcall::__private::RpcError>),
        Ret::Plain(ty) => quote!(::farcall::__private::Result<#ty, ::farcall::__private::RpcError>),
        Ret::Fallible { ok, err } => {
            quote!(::farcall::__private::Result<#ok, ::farcall::__private::CallError<#err>>)
        }
    };
    quote! {
        #(#docs)*
        pub fn #ident #generics (&self, #(_: #types),*) -> impl ::farcall::__private::Future<Output = #output> #where_clause {
            ::core::future::pending()
        }
    }
}

/// The trait's generic parameters then the method's, lifetimes first, without
/// defaults (which a function cannot have).
fn stub_generics(of_trait: &Generics, of_method: &Generics) -> Generics {
    let mut params: Vec<GenericParam> = of_trait
        .params
        .iter()
        .chain(&of_method.params)
        .cloned()
        .collect();
    params.sort_by_key(|p| !matches!(p, GenericParam::Lifetime(_)));
    for param in &mut params {
        match param {
            GenericParam::Type(t) => {
                t.eq_token = None;
                t.default = None;
            }
            GenericParam::Const(c) => {
                c.eq_token = None;
                c.default = None;
            }
            GenericParam::Lifetime(_) => {}
        }
    }
    let predicates: Vec<&WherePredicate> = of_trait
        .where_clause
        .iter()
        .chain(&of_method.where_clause)
        .flat_map(|w| &w.predicates)
        .collect();
    let mut generics = Generics::default();
    if !params.is_empty() {
        generics = parse_quote!(<#(#params),*>);
    }
    if !predicates.is_empty() {
        generics.where_clause = Some(parse_quote!(where #(#predicates),*));
    }
    generics
}

/// The struct, with the standard traits derived and serde's written out (it travels
/// as a capability, through the runtime).
fn definition(model: &RemoteTrait<'_>, names: &Names) -> TokenStream {
    let vis = &model.item.vis;
    let client = &names.client;
    let doc = format!(
        "A reference to a remote [`{}`]: cheap to clone, usable from any task. \
         Get one with `Connection::root` or receive it from a call.",
        model.name
    );
    quote! {
        #[doc = #doc]
        #[derive(
            ::farcall::__private::Clone,
            ::farcall::__private::fmt::Debug,
            ::farcall::__private::PartialEq,
            ::farcall::__private::Eq,
            ::farcall::__private::Hash
        )]
        #vis struct #client(::farcall::__private::Client);

        #[automatically_derived]
        impl ::farcall::__private::serde::Serialize for #client {
            fn serialize<__S: ::farcall::__private::serde::Serializer>(
                &self,
                serializer: __S,
            ) -> ::farcall::__private::Result<__S::Ok, __S::Error> {
                ::farcall::__private::serialize_client(&self.0, serializer)
            }
        }

        #[automatically_derived]
        impl<'de> ::farcall::__private::serde::Deserialize<'de> for #client {
            fn deserialize<__D: ::farcall::__private::serde::Deserializer<'de>>(
                deserializer: __D,
            ) -> ::farcall::__private::Result<Self, __D::Error> {
                ::farcall::__private::Result::map(
                    ::farcall::__private::deserialize_client(deserializer),
                    #client,
                )
            }
        }
    }
}

/// `RemoteClient`, for an `Interface` value.
fn remote_client(names: &Names, interface: &TokenStream) -> TokenStream {
    let client = &names.client;
    quote! {
        #[automatically_derived]
        impl ::farcall::__private::RemoteClient for #client {
            const INTERFACE: &'static ::farcall::__private::Interface = &#interface;
            fn from_client(client: ::farcall::__private::Client) -> Self {
                #client(client)
            }
            fn client(&self) -> &::farcall::__private::Client {
                &self.0
            }
        }
    }
}

/// The attributes of a trait method that its client method repeats: the docs, and
/// `#[allow(...)]` (a lint the user allowed on the method, such as too many
/// arguments, would otherwise fire on the client method).
fn carried_attrs<'a>(m: &RemoteMethod<'a>) -> impl Iterator<Item = &'a Attribute> {
    m.item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc") || a.path().is_ident("allow"))
}

fn method(m: &RemoteMethod<'_>, index: usize) -> TokenStream {
    let ident = &m.item.sig.ident;
    let docs = carried_attrs(m);
    let params = m.args.iter().map(|a| {
        let (name, ty) = (&a.name, a.ty);
        quote!(#name: #ty)
    });
    // Only the user's names and `self` are in scope here, so no name can clash.
    let names = m.args.iter().map(|a| &a.name);
    let args = quote!((#(#names,)*));
    let bounds = travels::bounds(m.wire_types());
    let info = quote! {
        &<Self as ::farcall::__private::RemoteClient>::INTERFACE.methods[#index]
    };
    if m.options.oneway {
        return quote! {
            #(#docs)*
            ///
            /// One-way: sent without waiting for the peer; fails only if it cannot be sent.
            pub fn #ident(&self, #(#params),*) -> ::farcall::__private::Result<(), ::farcall::__private::RpcError> #bounds {
                self.0.send(#info, &#args)
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
            self.0.call::<_, #shape>(#info, &#args)
        }
    }
}

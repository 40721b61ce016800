//! The gRPC `Destination` service on the wire: `Get` ([`Service`]) and
//! `GetProfile` ([`ProfileService`]) served below tonic's codec, each
//! message framed once ([`GetBody`]); any other method is unimplemented.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{codec::GetBody, profile_server::ProfileService, server::Service};

/// The gRPC Destination service: `Get` and `GetProfile`, served below
/// tonic's codec (each change's message framed once, [`GetBody`]).
#[derive(Clone)]
pub struct DestinationGrpc(pub Arc<Service>, pub Arc<ProfileService>);

impl tonic::server::NamedService for DestinationGrpc {
    const NAME: &'static str = "io.linkerd.proxy.destination.Destination";
}

impl<B> tonic::codegen::Service<http::Request<B>> for DestinationGrpc
where
    B: tonic::codegen::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let profile = match req.uri().path() {
            "/io.linkerd.proxy.destination.Destination/Get" => false,
            "/io.linkerd.proxy.destination.Destination/GetProfile" => true,
            _ => {
                let status =
                    Status::unimplemented("the mock serves Destination.Get and GetProfile");
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        let (svc, profiles) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            let answered = match super::codec::read_request(req.into_body()).await {
                Ok(get) if profile => profiles.get_profile(&get.path).map(Response::new),
                Ok(get) => svc.get(Request::new(get)).await,
                Err(status) => Err(status),
            };
            Ok(match answered {
                Ok(updates) => {
                    // Boxed already with tonic's error type: tonic takes it
                    // as it is, with no error-mapping layer around it.
                    let body = GetBody::new(updates.into_inner());
                    let body = tonic::body::Body::new(http_body_util::BodyExt::boxed_unsync(body));
                    let mut response = http::Response::new(body);
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

//! SIP: message parsing/printing ([`message`]) and the proxy core ([`proxy`]).
pub mod message;
pub mod proxy;

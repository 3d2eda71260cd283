//! Response constructors with the content types of SPEC §1.4. A leaf of `api`.

use crate::http::Response;

/// Content type P (SPEC §1.4).
pub const CT_TEXT: &str = "text/plain; version=0.0.4";
/// Content type J (SPEC §1.4).
pub const CT_JSON: &str = "application/json; charset=utf-8";
/// Content type O (SPEC §1.4).
pub const CT_OCTET: &str = "application/octet-stream";

/// A JSON response (content type J).
pub(crate) fn json_reply(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::new(status, CT_JSON, body)
}

/// A plain-text response (content type P).
pub(crate) fn text_reply(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::new(status, CT_TEXT, body)
}

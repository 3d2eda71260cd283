//! A blocking client of the master RPC protocol (coro_rpc frames, struct_pack bodies built
//! with `mc_core::rpc`), for tests that speak it to mc-master and to upstream's master alike.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mc_core::rpc::{decode, encode, RequestHeader, ResponseHeader, Style, Value, RESP_HDR, RPCS};

pub struct Rpc {
    pub sock: TcpStream,
    pub seq: u32,
}

impl Rpc {
    pub fn connect(addr: &str) -> Self {
        let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { sock, seq: 0 }
    }

    /// The request frame of `name(args)`, with the next sequence number.
    pub fn frame(&mut self, name: &str, args: Vec<Value>) -> Vec<u8> {
        let def = RPCS.iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no RPC {name}"));
        let body = match def.request_type() {
            None => Vec::new(),
            Some(t) => {
                let v = if def.args.len() == 1 { args.into_iter().next().unwrap() } else { Value::Struct(args) };
                encode(&t, &v, Style { type_info: true, len_code: 0 }).unwrap()
            }
        };
        let mut out = Vec::new();
        RequestHeader::new(self.seq, def.id, body.len() as u32).write(&mut out);
        out.extend_from_slice(&body);
        self.seq += 1;
        out
    }

    /// Reads one reply: (err_code, seq, body).
    pub fn read_reply(&mut self) -> (u8, u32, Vec<u8>) {
        let mut h = [0u8; RESP_HDR];
        self.sock.read_exact(&mut h).unwrap();
        let h = ResponseHeader::parse(&h);
        let mut body = vec![0u8; h.length as usize];
        self.sock.read_exact(&mut body).unwrap();
        (h.err_code, h.seq, body)
    }

    /// Calls `name`; panics unless the frame-level answer is a success.
    pub fn call(&mut self, name: &str, args: Vec<Value>) -> Value {
        match self.try_call(name, args) {
            Ok(v) => v,
            Err(code) => panic!("{name}: coro_rpc err_code {code}"),
        }
    }

    /// Calls `name`: the decoded result, or the frame's nonzero err_code.
    pub fn try_call(&mut self, name: &str, args: Vec<Value>) -> Result<Value, u8> {
        let f = self.frame(name, args);
        self.sock.write_all(&f).unwrap();
        let (code, seq, body) = self.read_reply();
        assert_eq!(seq, self.seq - 1, "{name}: sequence number");
        if code != 0 {
            return Err(code);
        }
        let def = RPCS.iter().find(|d| d.name == name).unwrap();
        Ok(decode(&def.ret, &body).unwrap().0)
    }
}

pub fn uuid(a: u64, b: u64) -> Value {
    Value::Struct(vec![Value::UInt(a), Value::UInt(b)])
}

pub fn s(x: &str) -> Value {
    Value::str(x)
}

/// A `Segment {id, name, base, size, te_endpoint, protocol "tcp", host ""}`.
pub fn segment(id: u64, name: &str, te: &str, base: u64, size: u64) -> Value {
    Value::Struct(vec![uuid(id, id), s(name), Value::UInt(base), Value::UInt(size), s(te), s("tcp"), s("")])
}

/// A `ReplicateConfig` of one replica, no preferences.
pub fn config() -> Value {
    mc_core::rpc::client::replicate_config(1)
}

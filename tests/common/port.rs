// SPDX-License-Identifier: MPL-2.0
//! A port that refuses connections, for tests of servers that are down. No
//! GStreamer here: tests without `mod common` include it by path.
#![allow(dead_code)]

/// A port held by this test for its whole run, refusing connections (RST)
/// while down, like a server that is not up (yet, or any more). The port is
/// never released: one released and bound again later could meanwhile be
/// handed to another test's mock server running in parallel (seen in CI: the
/// "late" server's bind failed with EADDRINUSE and the client was answered by
/// someone else's mock). It is bound by number (Linux then keeps it bound
/// through `shutdown` of the listening socket), so it is picked with a
/// throwaway bind to port 0 first.
pub struct ClosedPort(socket2::Socket, u16);

#[allow(clippy::new_without_default)]
impl ClosedPort {
    pub fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            // Taken in the microseconds between the two binds: pick another.
            if s.bind(&addr.into()).is_ok() {
                return ClosedPort(s, port);
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.1
    }

    /// The server comes up: a listener on the port (the same socket).
    pub fn up(&self) -> std::net::TcpListener {
        self.0.listen(128).unwrap();
        self.0.try_clone().unwrap().into()
    }

    /// The server goes down again; the port stays held.
    pub fn down(&self) {
        self.0.shutdown(std::net::Shutdown::Read).unwrap();
    }
}

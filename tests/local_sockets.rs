//! Local sockets in the guest: AF_UNIX by path and abstract name,
//! datagrams, SCM_RIGHTS, and loopback TCP/UDP between the sandbox's own
//! processes, each compared with the same program run natively; then
//! real programs (Debian's python3 with the host system mounted).

use std::time::Duration;

use hvsandbox::{Command, ExitStatus, Sandbox};
use hvsandbox_tests::{musl, same_as_native};

const PYTHON: &str = "/usr/bin/python3";

fn sandbox(secs: u64) -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(secs)).build().expect("build sandbox")
}

#[test]
fn local_and_loopback_sockets_behave_like_linux() {
    same_as_native(
        &mut sandbox(30),
        "local_sockets",
        &[
            // AF_UNIX by path: names, errors, an echo server and its client.
            "connect missing: ENOENT",
            "bind taken: EADDRINUSE",
            "open node: ENXIO",
            "connect not listening: ECONNREFUSED",
            "accept empty: EAGAIN",
            "poll listener: 1 revents=1",
            "accepted=1 peer unnamed=1 cloexec=1",
            "peercred pid=1 len=12",
            "client got: Ping 2",
            "backlog 0, second: EAGAIN",
            "select listener: 1 1",
            "connect stale: ECONNREFUSED",
            "connect unlinked: ENOENT",
            "stream to dgram: EPROTOTYPE",
            // Abstract datagrams with sender addresses.
            "autobind name len=8 abstract=1",
            "recvfrom truncated=3 from same=1",
            "client got: back",
            "unnamed sender len=0",
            "sendto connected other: EPERM",
            "queue full after some: 1 err=EAGAIN",
            "send to closed peer: ECONNREFUSED",
            // Passing descriptors and credentials.
            "parent read: through a passed pipe",
            "short control: n=1 ctrunc=1 controllen=0",
            "dropped fd closed: eof=0",
            "unreceived fd closed: eof=0",
            "pass bad fd: EBADF",
            "cmsg too long: EINVAL",
            "iovlen too big: EMSGSIZE",
            "credentials: n=4 type=2 pid=1 uid=1",
            "seqpacket boundaries: 3 4",
            "long stream: same=1 over 90 MB=1",
            "poll peer closed: 0x2015",
            "poll own shut wr: 0x4",
            "reset poll: 0x201d",
            "reset recv: ECONNRESET",
            "reset send: EPIPE",
            // Loopback TCP (IPv4 and IPv6) and UDP.
            "tcp4 ephemeral port=1 len=16",
            "tcp4 bind taken: EADDRINUSE",
            "tcp4 client got: hello over loopback",
            "tcp4 nonblocking connect: EINPROGRESS",
            "tcp4 peercred: ok pid=0",
            "tcp4 poll peer closed: 0x2005",
            "tcp4 poll after reset: 0x201d",
            "tcp4 recv after reset: ECONNRESET",
            "tcp4 connect closed port: ECONNREFUSED",
            "tcp6 client got: hello over loopback",
            "udp recvfrom=8 from port same=1 loopback=1 len=16",
            "udp then recv: ECONNREFUSED",
            // Hostile lengths and pointers.
            "addrlen 129: EINVAL",
            "addr unmapped: errno14",
            "getsockname len -1: EINVAL",
            "controllen 1 GiB refused: 1",
            "recvmsg iovlen 2000: EMSGSIZE",
            "send unmapped: EMSGSIZE",
            "recv unmapped: errno14",
            "recvmmsg: 3 len=8",
            "rcvtimeo recv: EAGAIN",
            "rcvtimeo get: 1 len=16",
            "rcvtimeo bad: EDOM",
            "done",
        ],
    );
}

/// Several sockets hold one port where Linux lets them: 0.0.0.0 beside an
/// IPV6_V6ONLY :: (asyncio's `create_server` binds both; the second bind
/// was EADDRINUSE), 127.0.0.1 beside 127.0.0.2; each takes the
/// connections its address covers.
#[test]
fn sockets_share_a_port_at_addresses_that_do_not_overlap() {
    same_as_native(
        &mut sandbox(30),
        "dual_stack",
        &[
            "0.0.0.0 and v6-only ::: ok, ok",
            "  to 127.0.0.1: first; to ::1: second",
            "dual-stack ::, then 0.0.0.0: ok, EADDRINUSE",
            "  to 127.0.0.1: first",
            "127.0.0.1, 127.0.0.2, then 0.0.0.0: ok, ok, EADDRINUSE",
            "  to 127.0.0.2: second",
        ],
    );
}

/// NETLINK_ROUTE shows the loopback interface: getifaddrs and
/// if_nameindex (netlink dumps underneath) list `lo` with 127.0.0.1/8 and
/// ::1/128, a raw dump's replies carry the request's sequence number and
/// the socket's port id and end in NLMSG_DONE, a change is EPERM; the
/// interface ioctls (if_nametoindex, SIOCGIF*) answer for `lo`; as
/// natively for `lo` (as nobody). Node's `os.networkInterfaces()` threw
/// here before (EAFNOSUPPORT).
#[test]
fn netlink_lists_the_loopback_interface_as_natively() {
    same_as_native(
        &mut sandbox(30),
        "netlink",
        &[
            "getifaddrs: lo 127.0.0.1/8 up 1 loopback 1",
            "getifaddrs: lo ::1/128 up 1 loopback 1",
            "if_nameindex: 1 lo",
            "bound: family 16, port id is mine 1",
            "dump: done 1, lo 1, wrong headers 0",
            "nothing more: -1 EAGAIN",
            "add an address: error EPERM",
            "if_nametoindex lo: 1",
            "if_nametoindex nosuch0: 0 ENODEV",
            "if_indextoname 1: lo",
            "flags: up 1 loopback 1 running 1",
            "mtu: 65536",
            "address: 127.0.0.1",
            "netmask: 255.0.0.0",
            "SIOCGIFCONF: lo 1",
            "SIOCSIFFLAGS: -1 EPERM",
        ],
    );
}

/// SO_LINGER keeps its seconds, and a TCP close lingering zero seconds
/// resets the connection: the peer reads what was sent, then
/// ECONNRESET, and its getpeername is ENOTCONN at once (CPython's
/// test_ssl relies on it); an ordinary close is an end of input.
#[test]
fn an_abortive_close_resets_the_connection_as_natively() {
    same_as_native(
        &mut sandbox(30),
        "tcp_linger",
        &[
            "set 1, 5: on 1, 5 s (len 8)",
            "after an abortive close: getpeername ENOTCONN",
            "after an abortive close: recv 5 ",
            "after an abortive close: recv -1 ECONNRESET",
            "after a close: getpeername ok",
            "after a close: recv 0 ",
        ],
    );
}

/// Urgent data (send MSG_OOB): the last byte goes outside the stream,
/// select reports it exceptional and poll POLLPRI until recv(MSG_OOB)
/// takes it; TCP and local streams alike, datagrams EOPNOTSUPP; with
/// SO_OOBINLINE it stays in the stream; a read stops at the urgent mark
/// and SIOCATMARK says when the reader is there; as
/// natively (CPython's test_asyncore and test_ftplib rely on it).
#[test]
fn urgent_data_is_kept_outside_the_stream_as_natively() {
    same_as_native(
        &mut sandbox(30),
        "tcp_urgent",
        &[
            "recv MSG_OOB with none: EINVAL",
            "after: exceptional 1, pri 1",
            "plain recv: 2 \"ab\"",
            "recv MSG_OOB: 1 'c'",
            "read: exceptional 0, pri 0",
            "mark before: 0; read to the mark: 3 \"xyz\"; at the mark 1; then: 5 \"after\"; mark after 0",
            "inline: sent 6, plain recv 5 \"ABOR\" ends with a newline 0",
            "inline recv MSG_OOB: EINVAL",
            "unix recv MSG_OOB: 1 'x'",
            "datagram send MSG_OOB: EOPNOTSUPP",
        ],
    );
}

/// IP datagrams' ancillary data (where it came in; hop limit / TTL and
/// traffic class / TOS as sent, from the sender's options or its control
/// messages; a short
/// control buffer cut as Linux cuts it), UDP-Lite sockets with ports of
/// their own, and sethostname's EPERM: as natively (CPython's test_socket
/// relies on them).
#[test]
fn ip_ancillary_data_and_udplite_behave_as_natively() {
    same_as_native(
        &mut sandbox(30),
        "ip_ancillary",
        &[
            "v6 default: 1 bytes, ctrunc 0, controllen 48: (41,52,len 20)=64 (41,67,len 20)=0",
            "v6 control messages: 1 bytes, ctrunc 0, controllen 48: (41,52,len 20)=7 (41,67,len 20)=64",
            "v6 room 21: 1 bytes, ctrunc 1, controllen 21: (41,52,len 20)=5",
            "v6 room 42: 1 bytes, ctrunc 1, controllen 42: (41,52,len 20)=5 (41,67,len 18)=32",
            "v6 pktinfo: 1 bytes, ctrunc 0, controllen 88: pktinfo6 ::1 if 1 (41,52,len 20)=5 (41,67,len 20)=32",
            "v6 from v4 pktinfo: 1 bytes, ctrunc 0, controllen 40: pktinfo6 ::ffff:127.0.0.1 if 1",
            "v4 socket options: 1 bytes, ctrunc 0, controllen 48: (0,2,len 20)=9 (0,1,len 17)=16",
            "v4 pktinfo: 1 bytes, ctrunc 0, controllen 80: pktinfo if 1 local 127.0.0.1 dst 127.0.0.1 (0,2,len 20)=9 \
             (0,1,len 17)=16",
            "v4 TTL 0: EINVAL",
            "udplite protocol 136",
            "second udplite bind to it: EADDRINUSE",
            "udplite received 4 \"lite\"; udp socket has -1",
            "sethostname: EPERM",
        ],
    );
}

/// SO_SNDBUF and SO_RCVBUF bound a TCP connection's bytes in flight (an
/// accepted socket takes its listener's), so a writer to a peer that
/// closed mid-way fails, as natively (CPython's test_asyncio.test_sendfile).
#[test]
fn socket_buffer_sizes_bound_what_is_in_flight_as_natively() {
    same_as_native(
        &mut sandbox(30),
        "sock_buffers",
        &[
            "default buffers: in flight over 128 KiB 1, then EAGAIN",
            "4 KiB buffers: in flight under 32 KiB 1, then EAGAIN; accepted socket's SO_RCVBUF 8192",
            "after the peer's close: a write fails",
        ],
    );
}

#[test]
fn socketpair_still_behaves_like_linux() {
    same_as_native(&mut sandbox(30), "socketpair", &["inet=1", "epipe=1"]);
}

#[test]
fn hostile_socket_calls_leave_the_runtime_standing() {
    // Guest only: natively the random addresses would reach the network.
    let out = sandbox(120).run(&Command::new(musl("socket_fuzz"))).unwrap();
    assert_eq!(out.stdout_str(), "fuzz calls=30000 kinds that succeeded=8\n", "{}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0));
}

#[test]
fn filling_socket_buffers_until_memory_runs_out_is_an_errno() {
    let sb = Sandbox::builder().memory_mib(64).max_open_files(4096).timeout(Duration::from_secs(60));
    let out = sb.build().unwrap().run(&Command::new(musl("sock_exhaust"))).unwrap();
    assert_eq!(out.stdout_str(), "stopped: out of memory after many MiB=1\nafter: 1\n", "{}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0));
}

/// A sandbox with the host system mounted, or None when python3 is not
/// installed.
fn python() -> Option<Sandbox> {
    if !std::path::Path::new(PYTHON).exists() {
        eprintln!("skipped: {PYTHON} does not exist on this host");
        return None;
    }
    Some(Sandbox::builder().host_system().memory_mib(256).timeout(Duration::from_secs(60)).build().unwrap())
}

fn run_python(sb: &mut Sandbox, script: &str) -> String {
    let out = sb.run(&Command::new(PYTHON).arg("-").stdin(script)).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}{}", out.stdout_str(), out.stderr_str());
    out.stdout_str().to_string()
}

#[test]
fn python_http_server_and_urllib_over_loopback() {
    let Some(mut sb) = python() else { return };
    let script = r#"
import http.server, threading, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
port = srv.server_address[1]
t = threading.Thread(target=srv.serve_forever)
t.start()
for p in ("/a", "/b"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=20) as r:
        print(r.status, r.read().decode())
srv.shutdown()
t.join()
srv.server_close()
print("port", port > 0)
"#;
    assert_eq!(run_python(&mut sb, script), "200 hello from /a\n200 hello from /b\nport True\n");
}

#[test]
fn python_unix_server_in_a_child_process_and_fd_passing() {
    let Some(mut sb) = python() else { return };
    let script = r#"
import os, socket, socketserver
path = "/tmp/py-echo.sock"
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())
srv = socketserver.UnixStreamServer(path, Echo)
pid = os.fork()
if pid == 0:
    srv.handle_request()
    os._exit(0)
srv.server_close()
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(path)
c.sendall(b"over a unix socket\n")
print(c.makefile("rb").readline().decode().strip())
print(os.waitpid(pid, 0)[1])
a, b = socket.socketpair()
r, w = os.pipe()
socket.send_fds(a, [b"fd"], [w])
msg, fds, flags, addr = socket.recv_fds(b, 16, 4)
os.write(fds[0], b"passed")
print(msg, len(fds), os.read(r, 16))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v.sendto(b"udp", u.getsockname())
data, frm = u.recvfrom(16)
print(data, frm[1] == v.getsockname()[1], frm[0])
"#;
    assert_eq!(run_python(&mut sb, script), "OVER A UNIX SOCKET\n0\nb'fd' 1 b'passed'\nb'udp' True 127.0.0.1\n");
}

#[test]
fn python_asyncio_streams_and_multiprocessing_handle_passing() {
    let Some(mut sb) = python() else { return };
    let script = r#"
import asyncio, os
from multiprocessing import Pipe, reduction
async def handle(reader, writer):
    line = await reader.readline()
    writer.write(line[::-1].strip() + b"\n")
    await writer.drain()
    writer.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    out = []
    for word in (b"stressed", b"drawer"):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(word + b"\n")
        out.append((await r.readline()).decode().strip())
        w.close()
        await w.wait_closed()
    srv.close()
    await srv.wait_closed()
    return out
print(asyncio.run(main()))
a, b = Pipe()
r, w = os.pipe()
reduction.send_handle(a, w, os.getpid())
h = reduction.recv_handle(b)
os.write(h, b"handle passed")
print(os.read(r, 32).decode())
"#;
    assert_eq!(run_python(&mut sb, script), "['desserts', 'reward']\nhandle passed\n");
}

/// Node's `os.networkInterfaces()` (libuv's getifaddrs through glibc's
/// netlink dumps) shows the loopback interface as natively; it threw
/// ERR_SYSTEM_ERROR in the sandbox before.
#[test]
fn node_lists_the_loopback_interface_as_natively() {
    const NODE: &str = "/usr/bin/node";
    if !std::path::Path::new(NODE).exists() {
        eprintln!("skipped: {NODE} does not exist on this host");
        return;
    }
    let code = "console.log(JSON.stringify(require('os').networkInterfaces().lo))";
    let native = std::process::Command::new(NODE).args(["-e", code]).output().unwrap();
    assert!(native.status.success());
    let native = String::from_utf8(native.stdout).unwrap();
    assert!(native.contains("\"127.0.0.1\""), "natively: {native}");
    let mut sb = Sandbox::builder().host_system().memory_mib(512).timeout(Duration::from_secs(60)).build().unwrap();
    let out = sb.run(&Command::new(NODE).args(["-e", code])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), native);
}

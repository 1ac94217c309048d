//! Socket names: addresses read from and written to program memory, and
//! who holds which name — a local socket's path (a socket node in the
//! guest's tree), an abstract name, or a port. Every IP address is this
//! sandbox's own: ports are one space for IPv4 and IPv6, and nothing
//! leaves the VM (an address that is not loopback, unspecified or bound
//! here is unreachable).

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;

use crate::errno::*;
use crate::file::{FileKind, OpenFile, Socket};
use crate::rt::Global;
use crate::sock::{Addr, AF_INET, AF_INET6, AF_UNIX, EADDRINUSE, ECONNREFUSED, ENETUNREACH, EPROTOTYPE};
use crate::uaccess::*;
use crate::vfs::{self, Dev, NodeKind};

/// The largest address a program may pass (`sockaddr_storage`).
const ADDR_MAX: u64 = 128;
const AF_UNSPEC: u16 = 0;
/// Linux's `ip_local_port_range`.
const EPHEMERAL: (u16, u16) = (32768, 60999);

/// An address as the program gave it.
pub fn read_addr(addr: u64, len: u64) -> Result<&'static [u8], i64> {
    if len > ADDR_MAX || (len as i32) < 0 {
        return Err(EINVAL);
    }
    user_bytes(addr, len)
}

pub fn family(b: &[u8]) -> Result<u16, i64> {
    match b {
        [a, c, ..] => Ok(u16::from_le_bytes([*a, *c])),
        _ => Err(EINVAL),
    }
}

/// A local socket's name: unnamed (autobind), a path (without its NUL)
/// or an abstract name (with its leading NUL).
pub enum UnixName {
    Unnamed,
    Path(Vec<u8>),
    Abstract(Vec<u8>),
}

pub fn parse_unix(b: &[u8]) -> Result<UnixName, i64> {
    if family(b)? != AF_UNIX {
        return Err(EINVAL);
    }
    let p = &b[2..];
    if p.len() > 108 {
        return Err(EINVAL);
    }
    match p.first() {
        None => Ok(UnixName::Unnamed),
        Some(0) => Ok(UnixName::Abstract(p.to_vec())),
        Some(_) => Ok(UnixName::Path(p[..p.iter().position(|&c| c == 0).unwrap_or(p.len())].to_vec())),
    }
}

/// AF_UNSPEC (a datagram socket's disconnect), or an IP address for a
/// socket of `domain`: (IPv4-mapped or IPv6 address, port).
pub fn parse_inet(b: &[u8], domain: u16) -> Result<Option<([u8; 16], u16)>, i64> {
    let fam = family(b)?;
    if fam == AF_UNSPEC {
        return Ok(None);
    }
    let port = match b.get(2..4) {
        Some(p) => u16::from_be_bytes([p[0], p[1]]),
        None => return Err(EINVAL),
    };
    match (domain, fam) {
        (AF_INET, AF_INET) => {
            let ip = b.get(4..8).filter(|_| b.len() >= 16).ok_or(EINVAL)?;
            Ok(Some((mapped([ip[0], ip[1], ip[2], ip[3]]), port)))
        }
        (AF_INET6, AF_INET6) => {
            let ip = b.get(8..24).ok_or(EINVAL)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(ip);
            Ok(Some((a, port)))
        }
        (AF_INET6, AF_INET) => Err(EINVAL),
        _ => Err(EAFNOSUPPORT),
    }
}

pub fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&v4);
    a
}

fn is_v4(ip: &[u8; 16]) -> bool {
    ip[..10].iter().all(|&b| b == 0) && ip[10] == 0xff && ip[11] == 0xff
}

pub fn unspecified(ip: &[u8; 16]) -> bool {
    *ip == [0; 16] || *ip == mapped([0; 4])
}

fn loopback(ip: &[u8; 16]) -> bool {
    (is_v4(ip) && ip[12] == 127) || *ip == LOOPBACK6
}

/// Where a connection to `ip` goes: the unspecified address means this
/// machine's loopback.
pub fn target_ip(ip: [u8; 16]) -> [u8; 16] {
    if ip == mapped([0; 4]) {
        mapped([127, 0, 0, 1])
    } else if ip == [0; 16] {
        LOOPBACK6
    } else {
        ip
    }
}

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// An IP address as a socket of `domain` reports it.
pub fn inet(domain: u16, ip: [u8; 16], port: u16) -> Addr {
    Addr::Inet { v6: domain == AF_INET6, ip, port }
}

/// The bytes of a `sockaddr` for `a`.
pub fn encode(a: &Addr) -> Vec<u8> {
    let mut out = Vec::new();
    match a {
        Addr::Unix(p) => {
            out.extend_from_slice(&AF_UNIX.to_le_bytes());
            out.extend_from_slice(p);
        }
        Addr::Inet { v6: false, ip, port } => {
            out.extend_from_slice(&AF_INET.to_le_bytes());
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&ip[12..]);
            out.extend_from_slice(&[0; 8]);
        }
        Addr::Inet { v6: true, ip, port } => {
            out.extend_from_slice(&AF_INET6.to_le_bytes());
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(ip);
            out.extend_from_slice(&[0; 4]);
        }
        Addr::Netlink(port) => {
            out.extend_from_slice(&crate::sock::AF_NETLINK.to_le_bytes());
            out.extend_from_slice(&[0; 2]);
            out.extend_from_slice(&port.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
        }
    }
    out
}

/// A socket's own name as getsockname reports it (unnamed: the family,
/// or the unspecified address and port 0).
pub fn name_or_unnamed(domain: u16, a: Option<&Addr>) -> Vec<u8> {
    match (a, domain) {
        (Some(a), _) => encode(a),
        (None, AF_UNIX) => AF_UNIX.to_le_bytes().to_vec(),
        (None, crate::sock::AF_NETLINK) => encode(&Addr::Netlink(0)),
        (None, d) => encode(&inet(d, if d == AF_INET { mapped([0; 4]) } else { [0; 16] }, 0)),
    }
}

/// Writes address bytes `b` to (`addr`, `*len`) as Linux does: as much
/// as fits, and the whole length. Nothing when either pointer is NULL.
pub fn put_addr(addr: u64, len: u64, b: &[u8]) -> Result<(), i64> {
    if addr == 0 || len == 0 {
        return Ok(());
    }
    let room = i32::from_le_bytes(user_bytes(len, 4)?.try_into().map_err(|_| EFAULT)?);
    if room < 0 {
        return Err(EINVAL);
    }
    let n = (room as usize).min(b.len());
    user_bytes_mut(addr, n as u64)?.copy_from_slice(&b[..n]);
    put_user(len, (b.len() as u32).to_le_bytes())
}

// --- who holds which name ------------------------------------------------------------

#[derive(Clone)]
enum Key {
    /// A path: its socket node.
    Node(Weak<vfs::Node>),
    Abstract(Vec<u8>),
    /// A port of stream (TCP) or datagram (UDP) sockets.
    Port(u16, u16),
}

impl Key {
    fn same(&self, other: &Key) -> bool {
        match (self, other) {
            (Key::Node(a), Key::Node(b)) => a.ptr_eq(b),
            (Key::Abstract(a), Key::Abstract(b)) => a == b,
            (Key::Port(t, p), Key::Port(u, q)) => t == u && p == q,
            _ => false,
        }
    }
}

static NAMES: Global<Vec<(Key, Weak<OpenFile>)>> = Global::new(Vec::new());

/// The names held, those of closed sockets (or removed socket nodes)
/// dropped first.
fn live_names() -> &'static mut Vec<(Key, Weak<OpenFile>)> {
    let names = NAMES.get();
    names.retain(|(k, f)| f.strong_count() > 0 && !matches!(k, Key::Node(n) if n.strong_count() == 0));
    names
}

fn holder(key: &Key) -> Option<Rc<OpenFile>> {
    live_names().iter().find(|(k, _)| k.same(key)).and_then(|(_, f)| f.upgrade())
}

/// Records that `f` holds `key`.
fn add_name(key: Key, f: &Rc<OpenFile>) -> Result<(), i64> {
    let names = NAMES.get();
    names.try_reserve(1).map_err(|_| ENOMEM)?;
    names.push((key, Rc::downgrade(f)));
    Ok(())
}

fn claim(key: Key, f: &Rc<OpenFile>) -> Result<(), i64> {
    if holder(&key).is_some() {
        return Err(EADDRINUSE);
    }
    add_name(key, f)
}

/// The sockets holding a port of type `ty`: several may, at addresses
/// that do not overlap (see [`overlap`]).
fn port_holders(ty: u16, port: u16) -> Vec<Rc<OpenFile>> {
    let key = Key::Port(ty, port);
    live_names().iter().filter(|(k, _)| k.same(&key)).filter_map(|(_, f)| f.upgrade()).collect()
}

/// How a socket is bound: (domain, IPV6_V6ONLY set, address).
type Binding = (u16, bool, [u8; 16]);

fn binding_of(f: &OpenFile) -> Option<Binding> {
    let s = socket_of(f).ok()?;
    let st = s.st.borrow();
    match &st.local {
        Some(Addr::Inet { ip, .. }) => Some((s.domain, v6only(s), *ip)),
        _ => None,
    }
}

/// IPV6_V6ONLY (level IPPROTO_IPV6, 41; option 26) on an IPv6 socket.
fn v6only(s: &Socket) -> bool {
    s.domain == AF_INET6 && s.st.borrow().options.iter().any(|o| o.0 == 41 && o.1 == 26 && o.2 != 0)
}

/// Whether a socket bound as `b` takes what is sent to `to`: its own
/// address, or any of its family's when it is bound to the unspecified
/// one (an IPv6 socket's also IPv4 addresses, unless IPV6_V6ONLY).
fn covers(b: &Binding, to: &[u8; 16]) -> bool {
    let (domain, v6only, ip) = b;
    if !unspecified(ip) {
        return ip == to;
    }
    if is_v4(to) {
        *domain == AF_INET || !v6only
    } else {
        *domain == AF_INET6
    }
}

/// Whether two bindings of one port overlap, as Linux sees it (it refuses
/// the second): the same address, or a wildcard over the other's, or two
/// wildcards but an IPv4 one and an IPV6_V6ONLY one.
fn overlap(a: &Binding, b: &Binding) -> bool {
    match (unspecified(&a.2), unspecified(&b.2)) {
        (false, false) => a.2 == b.2,
        (true, false) => covers(a, &b.2),
        (false, true) => covers(b, &a.2),
        (true, true) if (a.0 == AF_INET) == (b.0 == AF_INET) => true,
        (true, true) => {
            let v6 = if a.0 == AF_INET { b } else { a };
            !v6.1
        }
    }
}

pub fn socket_of(f: &OpenFile) -> Result<&Socket, i64> {
    match &f.kind {
        FileKind::Socket(s) => Ok(s),
        _ => Err(ENOTSOCK),
    }
}

/// Binds local socket `f` to `name` (a path makes a socket node, as
/// Linux: EADDRINUSE if the name exists).
pub fn bind_unix(f: &Rc<OpenFile>, s: &Socket, name: UnixName) -> Result<(), i64> {
    let bound = s.st.borrow().local.is_some();
    let addr = match name {
        _ if bound && !matches!(name, UnixName::Path(_)) => return Err(EINVAL),
        UnixName::Unnamed => return autobind_unix(f, s),
        UnixName::Abstract(n) => {
            claim(Key::Abstract(n.clone()), f)?;
            n
        }
        UnixName::Path(p) => {
            let (dir, leaf) = vfs::resolve_parent(&crate::task::cwd(), &p)?;
            if dir.readonly() {
                return Err(EROFS);
            }
            if !vfs::permitted(&dir, 3) {
                return Err(EACCES);
            }
            if vfs::lookup(&dir, &leaf).is_ok() {
                return Err(EADDRINUSE);
            }
            if bound {
                return Err(EINVAL);
            }
            let node = vfs::create_socket_node(&dir, &leaf, 0o777 & !crate::task::umask())?;
            claim(Key::Node(Rc::downgrade(&node)), f)?;
            let mut a = p;
            a.push(0);
            a
        }
    };
    s.st.borrow_mut().local = Some(Addr::Unix(addr));
    Ok(())
}

/// Linux's autobind: an abstract name of five hex digits.
pub fn autobind_unix(f: &Rc<OpenFile>, s: &Socket) -> Result<(), i64> {
    static NEXT: Global<u32> = Global::new(0);
    for _ in 0..0x10_0000 {
        let n = *NEXT.get() & 0xf_ffff;
        *NEXT.get() = n + 1;
        let mut name = alloc::vec![0u8];
        for shift in [16, 12, 8, 4, 0] {
            name.push(b"0123456789abcdef"[(n >> shift) as usize & 0xf]);
        }
        if claim(Key::Abstract(name.clone()), f).is_ok() {
            s.st.borrow_mut().local = Some(Addr::Unix(name));
            return Ok(());
        }
    }
    Err(ENOSPC)
}

/// The socket bound to local name `name`, for a socket of type `ty`
/// (connect, sendto): ENOENT and the like for a path, ECONNREFUSED when
/// nobody holds it, EPROTOTYPE when its type differs.
pub fn find_unix(name: &UnixName, ty: u16) -> Result<Rc<OpenFile>, i64> {
    let key = match name {
        UnixName::Unnamed => return Err(EINVAL),
        UnixName::Abstract(n) => Key::Abstract(n.clone()),
        UnixName::Path(p) => {
            let node = vfs::resolve(&crate::task::cwd(), p, true)?;
            if !matches!(node.kind, NodeKind::Dev(Dev::Socket)) {
                return Err(ECONNREFUSED);
            }
            if !vfs::permitted(&node, 2) {
                return Err(EACCES);
            }
            Key::Node(Rc::downgrade(&node))
        }
    };
    let f = holder(&key).ok_or(ECONNREFUSED)?;
    if socket_of(&f)?.ty != ty {
        return Err(EPROTOTYPE);
    }
    Ok(f)
}

/// Binds IP socket `f` to (`ip`, `port`); port 0 picks a free one.
pub fn bind_inet(f: &Rc<OpenFile>, s: &Socket, ip: [u8; 16], port: u16) -> Result<(), i64> {
    if s.st.borrow().local.is_some() {
        return Err(EINVAL);
    }
    if port != 0 && port < 1024 && crate::rt::UID != 0 {
        return Err(EACCES);
    }
    let port = if port == 0 {
        ephemeral(f, s.port_space())?
    } else {
        // Several sockets may hold a port at addresses that do not
        // overlap (127.0.0.1 and 127.0.0.2; 0.0.0.0 and an IPV6_V6ONLY ::).
        let me = (s.domain, v6only(s), ip);
        if port_holders(s.port_space(), port).iter().filter_map(|h| binding_of(h)).any(|b| overlap(&b, &me)) {
            return Err(EADDRINUSE);
        }
        add_name(Key::Port(s.port_space(), port), f)?;
        port
    };
    s.st.borrow_mut().local = Some(inet(s.domain, ip, port));
    Ok(())
}

/// Claims a free ephemeral port for `f`.
fn ephemeral(f: &Rc<OpenFile>, ty: u16) -> Result<u16, i64> {
    static NEXT: Global<u16> = Global::new(EPHEMERAL.0);
    let span = EPHEMERAL.1 - EPHEMERAL.0 + 1;
    for _ in 0..span {
        let p = *NEXT.get();
        *NEXT.get() = if p >= EPHEMERAL.1 { EPHEMERAL.0 } else { p + 1 };
        if claim(Key::Port(ty, p), f).is_ok() {
            return Ok(p);
        }
    }
    Err(EADDRINUSE)
}

/// Binds an unbound IP socket to an ephemeral port (connect, sendto).
pub fn autobind_inet(f: &Rc<OpenFile>, s: &Socket, ip: [u8; 16]) -> Result<(), i64> {
    if s.st.borrow().local.is_some() {
        return Ok(());
    }
    let port = ephemeral(f, s.port_space())?;
    s.st.borrow_mut().local = Some(inet(s.domain, ip, port));
    Ok(())
}

/// The socket of type `ty` that takes what is sent to (`ip`, `port`):
/// ENETUNREACH for an address that is not this sandbox's, None when
/// nobody listens there.
pub fn find_inet(ty: u16, ip: [u8; 16], port: u16) -> Result<Option<Rc<OpenFile>>, i64> {
    let ip = target_ip(ip);
    if !loopback(&ip) && !local_ip(&ip) {
        return Err(ENETUNREACH);
    }
    // The socket bound to the address itself, else a wildcard that takes
    // it (an IPv4 one before an IPv6 one for an IPv4 address, as Linux).
    let bound: Vec<(Rc<OpenFile>, Binding)> =
        port_holders(ty, port).into_iter().filter_map(|f| binding_of(&f).map(|b| (f, b))).collect();
    let rank = |b: &Binding| {
        if !unspecified(&b.2) {
            0
        } else if (b.0 == AF_INET) == is_v4(&ip) {
            1
        } else {
            2
        }
    };
    Ok(bound.into_iter().filter(|(_, b)| covers(b, &ip)).min_by_key(|(_, b)| rank(b)).map(|(f, _)| f))
}

/// Whether some socket here is bound to `ip` itself.
fn local_ip(ip: &[u8; 16]) -> bool {
    NAMES.get().iter().any(|(k, f)| {
        matches!(k, Key::Port(..))
            && f.upgrade().is_some_and(|f| {
                socket_of(&f).is_ok_and(|s| matches!(&s.st.borrow().local, Some(Addr::Inet { ip: b, .. }) if b == ip))
            })
    })
}

/// The address a socket of `domain` bound to `local` sends from to `to`:
/// an unspecified address becomes the one it reaches `to` by.
pub fn source(domain: u16, local: Option<&Addr>, to: [u8; 16]) -> Option<Addr> {
    match local {
        Some(Addr::Inet { ip, port, .. }) => {
            Some(inet(domain, if unspecified(ip) { target_ip(to) } else { *ip }, *port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &[u8]) -> Vec<u8> {
        [&AF_UNIX.to_le_bytes()[..], path].concat()
    }

    #[test]
    fn local_names_are_read_as_linux_reads_them() {
        assert!(matches!(parse_unix(&unix(b"")), Ok(UnixName::Unnamed)));
        assert!(matches!(parse_unix(&unix(b"/tmp/s\0junk")), Ok(UnixName::Path(p)) if p == b"/tmp/s"));
        assert!(matches!(parse_unix(&unix(b"\0ab\0c")), Ok(UnixName::Abstract(p)) if p == b"\0ab\0c"));
        assert_eq!(parse_unix(&[1]).err(), Some(EINVAL));
        assert_eq!(parse_unix(&[2, 0, b'x']).err(), Some(EINVAL));
        assert_eq!(parse_unix(&unix(&[b'a'; 109])).err(), Some(EINVAL));
    }

    #[test]
    fn ip_addresses_round_trip_and_bad_ones_are_refused() {
        let v4 = [2u8, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let (ip, port) = parse_inet(&v4, AF_INET).unwrap().unwrap();
        assert_eq!((ip, port), (mapped([127, 0, 0, 1]), 8080));
        assert_eq!(encode(&inet(AF_INET, ip, port)), v4);
        assert_eq!(parse_inet(&v4[..15], AF_INET).err(), Some(EINVAL));
        assert_eq!(parse_inet(&v4, AF_INET6).err(), Some(EINVAL));
        let mut v6 = alloc::vec![10u8, 0, 0, 80, 0, 0, 0, 0];
        v6.extend_from_slice(&LOOPBACK6);
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(parse_inet(&v6, AF_INET6).unwrap(), Some((LOOPBACK6, 80)));
        assert_eq!(encode(&inet(AF_INET6, LOOPBACK6, 80)), v6);
        assert_eq!(parse_inet(&v6[..23], AF_INET6).err(), Some(EINVAL));
        assert_eq!(parse_inet(&[0, 0], AF_INET).unwrap(), None);
        assert_eq!(parse_inet(&[1, 0, 0, 0], AF_INET).err(), Some(EAFNOSUPPORT));
        assert_eq!(target_ip(mapped([0; 4])), mapped([127, 0, 0, 1]));
        assert_eq!(target_ip([0; 16]), LOOPBACK6);
        assert!(loopback(&mapped([127, 1, 2, 3])) && !loopback(&mapped([10, 0, 0, 1])));
    }
}

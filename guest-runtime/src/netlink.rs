//! NETLINK_ROUTE sockets, as far as a machine with only a loopback
//! interface answers them: the link dump (RTM_GETLINK: `lo`) and the
//! address dump (RTM_GETADDR: 127.0.0.1/8 and ::1/128 on `lo`), so
//! getifaddrs, if_nameindex, Node's `os.networkInterfaces()`, Go's
//! `net.Interfaces()` and glibc's address checks see what a sandbox has.
//! A route dump is empty; a change (new/delete link, address, route) is
//! EPERM, as for an unprivileged process; other requests EOPNOTSUPP.
//!
//! The interface ioctls on any socket (SIOCGIFINDEX, SIOCGIFNAME,
//! SIOCGIFFLAGS, SIOCGIFMTU, SIOCGIFADDR, SIOCGIFNETMASK,
//! SIOCGIFHWADDR, SIOCGIFCONF: if_nametoindex, if_indextoname and older
//! tools) answer for `lo` too; their setting forms are EPERM.
//!
//! A request is answered at once: the replies go into the socket's own
//! datagram queue, from port 0 (the kernel), carrying the request's
//! sequence number and the socket's port id, a dump's parts flagged
//! NLM_F_MULTI and ended by NLMSG_DONE, as Linux sends them.

use alloc::vec::Vec;

use crate::errno::*;
use crate::sock::{self, Addr, Socket, AF_INET, AF_INET6, AF_NETLINK, ECONNREFUSED, ENOBUFS};

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_FLAGS: u16 = 8;

/// The loopback interface: its index, flags (IFF_UP, IFF_LOOPBACK,
/// IFF_RUNNING, IFF_LOWER_UP), type (ARPHRD_LOOPBACK) and MTU.
const LO_INDEX: i32 = 1;
const LO_FLAGS: u32 = 0x1 | 0x8 | 0x40 | 0x1_0000;
const ARPHRD_LOOPBACK: u16 = 772;
const LO_MTU: u32 = 65536;
const IFA_F_PERMANENT: u8 = 0x80;
const RT_SCOPE_HOST: u8 = 254;

/// Most bytes of requests one send is read for (a request is small).
const MAX_REQUEST: usize = 64 << 10;

/// The port id a socket sends from: the one it was bound to, or (as
/// Linux's autobind) the process's id.
pub fn port_of(s: &Socket) -> u32 {
    if let Some(Addr::Netlink(port)) = s.st.borrow().local {
        return port;
    }
    let port = crate::task::current_process().pid;
    s.st.borrow_mut().local = Some(Addr::Netlink(port));
    port
}

/// The port id a `struct sockaddr_nl` (family, pad, port id, multicast
/// groups) names; EINVAL for another address.
fn port_in(b: &[u8]) -> Result<u32, i64> {
    if b.len() < 12 || u16::from_le_bytes([b[0], b[1]]) != AF_NETLINK {
        return Err(EINVAL);
    }
    Ok(u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
}

/// bind(2) on a netlink socket. Multicast groups are taken and never
/// sent to: nothing here changes.
pub fn bind(s: &Socket, b: &[u8]) -> Result<(), i64> {
    let port = port_in(b)?;
    if let Some(Addr::Netlink(old)) = s.st.borrow().local {
        // Bound already: the same id again is fine (Linux: EINVAL else).
        return if port == 0 || port == old { Ok(()) } else { Err(EINVAL) };
    }
    let port = if port == 0 { crate::task::current_process().pid } else { port };
    s.st.borrow_mut().local = Some(Addr::Netlink(port));
    Ok(())
}

/// Answers the requests in `data` (sent to `dest`, the kernel when
/// absent): returns the bytes taken.
pub fn send(s: &Socket, data: &[u8], dest: Option<&[u8]>) -> Result<usize, i64> {
    if let Some(d) = dest {
        if port_in(d)? != 0 {
            // Another process's netlink socket: none listens here.
            return Err(ECONNREFUSED);
        }
    }
    let port = port_of(s);
    let mut at = 0;
    let data = &data[..data.len().min(MAX_REQUEST)];
    while data.len() - at >= NLMSG_HDR {
        let h = &data[at..];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < NLMSG_HDR || len > h.len() {
            break;
        }
        let ty = u16::from_le_bytes([h[4], h[5]]);
        let flags = u16::from_le_bytes([h[6], h[7]]);
        let seq = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        let reply = answer(ty, flags, seq, port, &h[..len]);
        if !reply.is_empty() {
            let q = s.st.borrow().rx.clone().ok_or(ECONNREFUSED)?;
            sock::send_msg(&q, &reply, Some(Addr::Netlink(0)), None, Default::default(), true, None)
                .map_err(|_| ENOBUFS)?;
        }
        at += (len + 3) & !3;
    }
    Ok(data.len())
}

/// The reply to one request (empty: none is due).
fn answer(ty: u16, flags: u16, seq: u32, port: u32, req: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if ty < 0x10 || flags & NLM_F_REQUEST == 0 {
        // Control messages and non-requests get nothing.
        return out;
    }
    let body = &req[NLMSG_HDR..];
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let status = match ty {
        RTM_GETLINK if dump => {
            link(&mut out, seq, port, NLM_F_MULTI);
            done(&mut out, seq, port);
            return out;
        }
        RTM_GETLINK => {
            // ifinfomsg: the index at 4, then attributes (a name).
            let index = body.get(4..8).map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let named = attrs(body.get(16..).unwrap_or_default()).find(|(t, _)| *t == IFLA_IFNAME).map(|(_, v)| v);
            let lo = named.map_or(index == LO_INDEX, |n| n.split(|&c| c == 0).next() == Some(b"lo"));
            if lo && (index == 0 || index == LO_INDEX) {
                link(&mut out, seq, port, 0);
                return out;
            }
            if index == 0 && named.is_none() {
                -EINVAL
            } else {
                -ENODEV
            }
        }
        RTM_GETADDR if dump => {
            // The family asked for (rtgenmsg or ifaddrmsg: its first byte).
            let family = body.first().copied().unwrap_or(0) as u16;
            if family == 0 || family == AF_INET {
                addr(&mut out, seq, port, AF_INET, 8, &[127, 0, 0, 1]);
            }
            if family == 0 || family == AF_INET6 {
                let mut one = [0u8; 16];
                one[15] = 1;
                addr(&mut out, seq, port, AF_INET6, 128, &one);
            }
            done(&mut out, seq, port);
            return out;
        }
        RTM_GETROUTE if dump => {
            done(&mut out, seq, port);
            return out;
        }
        RTM_NEWLINK | RTM_DELLINK | RTM_SETLINK | RTM_NEWADDR | RTM_DELADDR | RTM_NEWROUTE | RTM_DELROUTE => -EPERM,
        _ => -EOPNOTSUPP,
    };
    if status != 0 || flags & NLM_F_ACK != 0 {
        // NLMSG_ERROR: the status, then the request's header.
        let mut payload = Vec::new();
        payload.extend_from_slice(&(status as i32).to_le_bytes());
        payload.extend_from_slice(&req[..NLMSG_HDR]);
        message(&mut out, NLMSG_ERROR, 0, seq, port, &payload);
    }
    out
}

/// The attributes (type, value) of a netlink attribute list.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    core::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_le_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_le_bytes([b[2], b[3]]);
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty & 0x3fff, v))
    })
}

fn message(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, port: u32, payload: &[u8]) {
    out.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&port.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
}

fn attr(p: &mut Vec<u8>, ty: u16, value: &[u8]) {
    p.extend_from_slice(&((4 + value.len()) as u16).to_le_bytes());
    p.extend_from_slice(&ty.to_le_bytes());
    p.extend_from_slice(value);
    p.resize((p.len() + 3) & !3, 0);
}

fn done(out: &mut Vec<u8>, seq: u32, port: u32) {
    message(out, NLMSG_DONE, NLM_F_MULTI, seq, port, &0i32.to_le_bytes());
}

/// RTM_NEWLINK for `lo`.
fn link(out: &mut Vec<u8>, seq: u32, port: u32, flags: u16) {
    let mut p = Vec::new();
    p.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, pad
    p.extend_from_slice(&ARPHRD_LOOPBACK.to_le_bytes());
    p.extend_from_slice(&LO_INDEX.to_le_bytes());
    p.extend_from_slice(&LO_FLAGS.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes()); // ifi_change
    attr(&mut p, IFLA_IFNAME, b"lo\0");
    attr(&mut p, IFLA_TXQLEN, &1000u32.to_le_bytes());
    attr(&mut p, IFLA_OPERSTATE, &[0]); // IF_OPER_UNKNOWN, as lo's
    attr(&mut p, IFLA_MTU, &LO_MTU.to_le_bytes());
    attr(&mut p, IFLA_ADDRESS, &[0; 6]);
    attr(&mut p, IFLA_BROADCAST, &[0; 6]);
    message(out, RTM_NEWLINK, flags, seq, port, &p);
}

/// RTM_NEWADDR for address `ip`/`prefix` on `lo`.
fn addr(out: &mut Vec<u8>, seq: u32, port: u32, family: u16, prefix: u8, ip: &[u8]) {
    let mut p = Vec::new();
    p.extend_from_slice(&[family as u8, prefix, IFA_F_PERMANENT, RT_SCOPE_HOST]);
    p.extend_from_slice(&LO_INDEX.to_le_bytes());
    attr(&mut p, IFA_ADDRESS, ip);
    if family == AF_INET {
        attr(&mut p, IFA_LOCAL, ip);
        attr(&mut p, IFA_LABEL, b"lo\0");
    }
    attr(&mut p, IFA_FLAGS, &(IFA_F_PERMANENT as u32).to_le_bytes());
    message(out, RTM_NEWADDR, NLM_F_MULTI, seq, port, &p);
}

/// `struct ifreq`: a name of 16 bytes, then a union of 24.
const IFREQ: usize = 40;

/// An interface ioctl on a socket: Some(result), or None for a request
/// that is not one.
pub fn ioctl(req: u64, arg: u64) -> Option<Result<u64, i64>> {
    const SIOCGIFNAME: u64 = 0x8910;
    const SIOCGIFCONF: u64 = 0x8912;
    const SIOCGIFFLAGS: u64 = 0x8913;
    const SIOCGIFADDR: u64 = 0x8915;
    const SIOCGIFNETMASK: u64 = 0x891b;
    const SIOCGIFMTU: u64 = 0x8921;
    const SIOCGIFHWADDR: u64 = 0x8927;
    const SIOCGIFINDEX: u64 = 0x8933;
    Some(match req {
        SIOCGIFCONF => ifconf(arg),
        SIOCGIFNAME | SIOCGIFFLAGS | SIOCGIFADDR | SIOCGIFNETMASK | SIOCGIFMTU | SIOCGIFHWADDR | SIOCGIFINDEX => {
            ifreq(req, arg)
        }
        // The setting forms (SIOCSIFFLAGS, SIOCSIFADDR, ... SIOCSIFMTU,
        // SIOCSIFHWADDR, SIOCSIFNAME): an unprivileged process may not.
        0x8914 | 0x8916 | 0x8918 | 0x891a | 0x891c | 0x8922 | 0x8923 | 0x8924 => Err(EPERM),
        _ => return None,
    })
}

/// A `struct sockaddr_in` for `ip` (port 0), as the socket calls encode
/// one.
fn sockaddr_in(ip: [u8; 4]) -> Vec<u8> {
    crate::sock_addr::encode(&crate::sock_addr::inet(AF_INET, crate::sock_addr::mapped(ip), 0))
}

fn ifreq(req: u64, arg: u64) -> Result<u64, i64> {
    let mut r = [0u8; IFREQ];
    r.copy_from_slice(crate::uaccess::user_bytes(arg, IFREQ as u64)?);
    if req == 0x8910 {
        // SIOCGIFNAME: by index.
        if i32::from_le_bytes([r[16], r[17], r[18], r[19]]) != LO_INDEX {
            return Err(ENODEV);
        }
        r[..16].fill(0);
        r[..2].copy_from_slice(b"lo");
    } else {
        if r[..16].split(|&c| c == 0).next() != Some(b"lo") {
            return Err(ENODEV);
        }
        let u = &mut r[16..];
        u.fill(0);
        match req {
            0x8913 => u[..2].copy_from_slice(&(LO_FLAGS as u16).to_le_bytes()),
            0x8915 => u[..16].copy_from_slice(&sockaddr_in([127, 0, 0, 1])),
            0x891b => u[..16].copy_from_slice(&sockaddr_in([255, 0, 0, 0])),
            0x8921 => u[..4].copy_from_slice(&LO_MTU.to_le_bytes()),
            0x8927 => u[..2].copy_from_slice(&ARPHRD_LOOPBACK.to_le_bytes()),
            _ => u[..4].copy_from_slice(&LO_INDEX.to_le_bytes()), // SIOCGIFINDEX
        }
    }
    crate::uaccess::user_bytes_mut(arg, IFREQ as u64)?.copy_from_slice(&r);
    Ok(0)
}

/// SIOCGIFCONF: `struct ifconf` (a length, then a buffer pointer at 8):
/// lo's IPv4 address as one `ifreq` if it fits; without a buffer, the
/// length needed.
fn ifconf(arg: u64) -> Result<u64, i64> {
    let c = crate::uaccess::user_bytes(arg, 16)?;
    let len = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    let buf = u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
    let mut filled = 0i32;
    if buf == 0 {
        filled = IFREQ as i32;
    } else if len >= IFREQ as i32 {
        let mut r = [0u8; IFREQ];
        r[..2].copy_from_slice(b"lo");
        r[16..32].copy_from_slice(&sockaddr_in([127, 0, 0, 1]));
        crate::uaccess::user_bytes_mut(buf, IFREQ as u64)?.copy_from_slice(&r);
        filled = IFREQ as i32;
    }
    crate::uaccess::put_user(arg, filled.to_le_bytes())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        message(&mut out, ty, flags, 7, 0, body);
        out
    }

    /// (type, flags, seq, port) of each message in `b`.
    fn headers(b: &[u8]) -> Vec<(u16, u16, u32, u32)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at + NLMSG_HDR <= b.len() {
            let h = &b[at..];
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            v.push((
                u16::from_le_bytes([h[4], h[5]]),
                u16::from_le_bytes([h[6], h[7]]),
                u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
                u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            ));
            at += (len + 3) & !3;
        }
        v
    }

    #[test]
    fn dumps_list_lo_and_end_with_done() {
        let links = request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &[0; 16]);
        let r = answer(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 7, 42, &links);
        assert_eq!(headers(&r), [(RTM_NEWLINK, NLM_F_MULTI, 7, 42), (NLMSG_DONE, NLM_F_MULTI, 7, 42)]);
        let name = attrs(&r[NLMSG_HDR + 16..]).find(|a| a.0 == IFLA_IFNAME).unwrap().1;
        assert_eq!(name, b"lo\0");
        let addrs = request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &[AF_INET6 as u8]);
        let r = answer(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 7, 42, &addrs);
        assert_eq!(headers(&r), [(RTM_NEWADDR, NLM_F_MULTI, 7, 42), (NLMSG_DONE, NLM_F_MULTI, 7, 42)]);
        assert_eq!(r[NLMSG_HDR], AF_INET6 as u8);
        let both = answer(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 7, 42, &request(RTM_GETADDR, 0x301, &[0]));
        assert_eq!(headers(&both).len(), 3);
    }

    #[test]
    fn changes_are_refused_and_odd_input_is_bounded() {
        let req = request(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, &[0; 8]);
        let r = answer(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, 7, 42, &req);
        assert_eq!(headers(&r)[0].0, NLMSG_ERROR);
        assert_eq!(i32::from_le_bytes(r[16..20].try_into().unwrap()), -(EPERM as i32));
        // A get of an interface that is not there; a truncated one.
        let r =
            answer(RTM_GETLINK, NLM_F_REQUEST, 7, 42, &request(RTM_GETLINK, NLM_F_REQUEST, &[0, 0, 0, 0, 9, 0, 0, 0]));
        assert_eq!(i32::from_le_bytes(r[16..20].try_into().unwrap()), -(ENODEV as i32));
        let r = answer(RTM_GETLINK, NLM_F_REQUEST, 7, 42, &request(RTM_GETLINK, NLM_F_REQUEST, &[]));
        assert_eq!(i32::from_le_bytes(r[16..20].try_into().unwrap()), -(EINVAL as i32));
        let by_name =
            request(RTM_GETLINK, NLM_F_REQUEST, &[[0u8; 16].as_slice(), &[7, 0, 3, 0, b'l', b'o', 0, 0]].concat());
        let r = answer(RTM_GETLINK, NLM_F_REQUEST, 7, 42, &by_name);
        assert_eq!(headers(&r), [(RTM_NEWLINK, 0, 7, 42)]);
        // Attribute lists that lie about their lengths end.
        assert_eq!(attrs(&[200, 0, 1, 0, 1]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }
}

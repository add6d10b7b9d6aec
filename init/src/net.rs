//! Interfaces, addresses and routes over rtnetlink (messages by `netlink-packet-route`, the socket
//! by `netlink-sys`): no `ip` binary needed in the image.
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};

/// A network interface as /sys shows it.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

fn sys(name: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The loopback interface, and the first Ethernet one by name (eth0, ens3, enp0s2 …).
pub fn interfaces() -> (Option<Interface>, Option<Interface>) {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let get = |name: &str| -> Option<Interface> {
        let index = sys(name, "ifindex")?.parse().ok()?;
        let mut mac = [0u8; 6];
        let text = sys(name, "address")?;
        for (i, part) in text.split(':').take(6).enumerate() {
            mac[i] = u8::from_str_radix(part, 16).ok()?;
        }
        Some(Interface {
            name: name.to_string(),
            index,
            mac,
        })
    };
    let lo = get("lo");
    let ether = names
        .iter()
        .filter(|n| *n != "lo")
        .filter(|n| sys(n, "type").as_deref() == Some("1")) // ARPHRD_ETHER
        .find_map(|n| get(n));
    (lo, ether)
}

fn request(message: RouteNetlinkMessage, flags: u16) -> Result<(), String> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))?;
    socket
        .bind_auto()
        .map_err(|e| format!("netlink bind: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("netlink connect: {e}"))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| format!("netlink send: {e}"))?;
    let mut reply = vec![0u8; 8192];
    let n = socket
        .recv(&mut &mut reply[..], 0)
        .map_err(|e| format!("netlink receive: {e}"))?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
        .map_err(|e| format!("netlink reply: {e}"))?;
    match answer.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(format!("{}", e.to_io())),
        _ => Ok(()),
    }
}

/// Bring the interface up.
pub fn link_up(index: u32) -> Result<(), String> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    request(RouteNetlinkMessage::SetLink(link), 0)
}

/// Give the interface `address/prefix_len`.
pub fn add_address(index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<(), String> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(address)),
        AddressAttribute::Address(IpAddr::V4(address)),
    ];
    request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// Remove `address/prefix_len` from the interface.
pub fn del_address(index: u32, address: Ipv4Addr, prefix_len: u8) -> Result<(), String> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(address)),
        AddressAttribute::Address(IpAddr::V4(address)),
    ];
    request(RouteNetlinkMessage::DelAddress(msg), 0)
}

/// The default route through `gateway` on the interface.
pub fn add_default_route(index: u32, gateway: Ipv4Addr) -> Result<(), String> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Dhcp;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
        RouteAttribute::Oif(index),
    ];
    request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

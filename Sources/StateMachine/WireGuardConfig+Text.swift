extension WireGuardConfiguration {
    /// The configuration as a wg-quick file, in a fixed order. It holds the private key: for tests
    /// and tools only, never for a log or a file another process may read.
    public var wgQuickText: String {
        var lines = ["[Interface]", "PrivateKey = \(privateKey.key.base64)",
                     "Address = \(addresses.map(\.description).joined(separator: ", "))"]
        let dns = dnsServers.map(\.description) + dnsServersV6.map(\.description) + searchDomains
        if !dns.isEmpty { lines.append("DNS = \(dns.joined(separator: ", "))") }
        if let mtu { lines.append("MTU = \(mtu)") }
        if let listenPort { lines.append("ListenPort = \(listenPort)") }
        for peer in peers {
            lines += ["", "[Peer]", "PublicKey = \(peer.publicKey.base64)"]
            if let psk = peer.presharedKey { lines.append("PresharedKey = \(psk.key.base64)") }
            lines.append("Endpoint = \(peer.endpoint)")
            lines.append("AllowedIPs = \(peer.allowedIPs.map(\.description).joined(separator: ", "))")
            if let keepalive = peer.persistentKeepalive { lines.append("PersistentKeepalive = \(keepalive)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension WireGuardConfiguration {
    /// The warning for a wg-quick file every user can read (mode o+r): it holds the private key.
    /// Only a warning, as for the credentials file: a mounted secret may come 0444.
    public static func permissionWarning(path: String, mode: UInt32) -> String? {
        guard mode & 0o004 != 0 else { return nil }
        let octal = String(mode & 0o7777, radix: 8)
        return "CONFIG=\(path) holds a private key and is readable by every user (mode "
            + "\(String(repeating: "0", count: max(0, 4 - octal.count)) + octal)): chmod 600 it"
    }
}

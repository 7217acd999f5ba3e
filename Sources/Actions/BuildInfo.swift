import CBuildInfo

/// What `vpnsup --version` prints: the release and the commit, baked in at build time by
/// Package.swift (from git, or VPNSUP_COMMIT where the sources have no .git, as in `docker build`).
public enum BuildInfo {
    public static let version = String(cString: vpnsup_build_version())
    public static let commit = String(cString: vpnsup_build_commit())

    /// `vpnsup 0.2.0 (commit 1a2b3c4d5e6f)`
    public static var line: String { "vpnsup \(version) (commit \(commit))" }
}

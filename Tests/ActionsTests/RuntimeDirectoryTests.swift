import Foundation
import Testing
import TestSupport
@testable import Actions

/// docs/security.md, "Local trust boundaries": RUNTIME_DIR is used only when nobody but root
/// controls it or any directory above it. Root only (chown, and directories of other owners).
@Suite(.enabled(if: IsolatedNetworkNamespace.isRootInside, "needs root (in the namespace `make test` makes for root tests)"))
struct RuntimeDirectoryTests {
    /// A private scratch directory under /tmp (root's, mode 0700; /tmp is sticky and root's).
    private func scratch() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vpnsup-rundir-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        return directory
    }

    private func status(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    @Test func createsAPrivateRootDirectoryAndItsParents() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let path = base + "/a/b/run"
        try RuntimeDirectory.prepare(path)
        let info = try #require(status(path))
        #expect(info.st_mode & S_IFMT == S_IFDIR && info.st_mode & 0o7777 == 0o700 && info.st_uid == 0 && info.st_gid == 0)

        // Again, with a status group: 0710 root:group, through the directory's descriptor.
        try RuntimeDirectory.prepare(path, statusGroup: 65534)
        let grouped = try #require(status(path))
        #expect(grouped.st_mode & 0o7777 == 0o710 && grouped.st_uid == 0 && grouped.st_gid == 65534)
    }

    /// The issue-18 attack: RUNTIME_DIR a symlink to a directory of `nobody`. Refused, and the
    /// target keeps its owner and mode (it used to be chowned to root and used).
    @Test func refusesASymlinkAtRuntimeDirAndLeavesItsTargetAlone() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let target = base + "/nobodys"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        #expect(chown(target, 65534, 65534) == 0 && chmod(target, 0o755) == 0)
        let path = base + "/run"
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: target)

        let error = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(path) }
        #expect(error?.description == "\(path) is a symlink: RUNTIME_DIR must name the directory itself")
        let info = try #require(status(target))
        #expect(info.st_uid == 65534 && info.st_mode & 0o7777 == 0o755)
    }

    /// The other issue-18 attack: a parent `nobody` can write (who renamed `run` away and made
    /// their own). Refused whether nobody owns it or it is merely writable by others.
    @Test func refusesAParentAnotherUserControls() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let owned = base + "/owned"
        try FileManager.default.createDirectory(atPath: owned, withIntermediateDirectories: false)
        #expect(chown(owned, 65534, 65534) == 0 && chmod(owned, 0o755) == 0)
        let ownedError = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(owned + "/run") }
        #expect(ownedError?.description == "\(owned) is owned by uid 65534 (mode 0755), not root: that user could replace what is below it")
        #expect(status(owned + "/run") == nil, "nothing is created below it")

        let open = base + "/open"
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
        #expect(chmod(open, 0o777) == 0)
        let openError = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(open + "/run") }
        #expect(openError?.description == "\(open) is writable by group or others (mode 0777) and not sticky: they could replace what is below it")
    }

    /// A sticky directory of root's that everyone may write (/tmp) is a fine parent: nobody else
    /// can rename or remove root's entries in it. What another user put there first is refused.
    @Test func aStickyRootParentIsAcceptedButASquatterBelowItIsNot() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let sticky = base + "/tmp"
        try FileManager.default.createDirectory(atPath: sticky, withIntermediateDirectories: false)
        #expect(chmod(sticky, 0o1777) == 0)
        try RuntimeDirectory.prepare(sticky + "/run")
        #expect(status(sticky + "/run")?.st_uid == 0)

        // `nobody` made the directory first: used as is, it would be theirs.
        let squatted = sticky + "/squatted"
        try FileManager.default.createDirectory(atPath: squatted, withIntermediateDirectories: false)
        #expect(chown(squatted, 65534, 65534) == 0)
        let error = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(squatted) }
        #expect(error?.description == "\(squatted) is owned by uid 65534, not root: remove it or name another")
        #expect(status(squatted)?.st_uid == 65534, "never chowned away from its owner")

        // A symlink of theirs as a parent: they could point it elsewhere later.
        #expect(symlink(base, sticky + "/link") == 0)
        #expect(lchown(sticky + "/link", 65534, 65534) == 0)
        let linkError = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(sticky + "/link/run") }
        #expect(linkError?.description == "\(sticky)/link is a symlink owned by uid 65534, who could point it elsewhere")
    }

    /// A root-owned symlink among the parents (/var/run -> /run) is followed, and the directories
    /// it leads to are checked in turn.
    @Test func aRootSymlinkAmongTheParentsIsFollowedAndItsTargetChecked() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(atPath: base) }
        let real = base + "/real"
        try FileManager.default.createDirectory(atPath: real, withIntermediateDirectories: false)
        #expect(symlink("real", base + "/alias") == 0)
        try RuntimeDirectory.prepare(base + "/alias/run")
        #expect((status(real + "/run")?.st_mode ?? 0) & S_IFMT == S_IFDIR)

        #expect(chmod(real, 0o777) == 0)
        let error = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(base + "/alias/run2") }
        #expect(error?.description == "\(real) is writable by group or others (mode 0777) and not sticky: they could replace what is below it")
    }

    @Test func refusesAFileInThePath() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(atPath: base) }
        try "x".write(toFile: base + "/credentials", atomically: true, encoding: .utf8)
        let error = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(base + "/credentials/run") }
        #expect(error?.description == "\(base)/credentials is not a directory")
        let final = #expect(throws: RuntimeDirectoryError.self) { try RuntimeDirectory.prepare(base + "/credentials") }
        #expect(final?.description == "\(base)/credentials is not a directory")
    }
}

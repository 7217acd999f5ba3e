#pragma once
// The kernel's netlink, rtnetlink and nf_tables headers, and the few calls and constants Swift
// cannot see: vpnsup builds and reads netlink messages itself (SystemSupport's NetlinkMessage),
// with no library. A Swift file importing this module should not name glibc's SOCK_* or MSG_*
// constants: the names then came and went in the module's other files, depending on how the
// compiler batched them (the headers below include glibc's socket headers).
// glibc's network headers first: the linux/ ones clash with them otherwise.
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
// Policy routing rules (AddressConfigurator.ensureRule): struct fib_rule_hdr, FRA_*, FR_ACT_*.
#include <linux/fib_rules.h>
// The nftables monitor (NftablesMonitor): nfnetlink subsystem, message and attribute numbers,
// and classic BPF opcodes to drop vpnsup's own notifications in the kernel.
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
// Glibc's Swift module does not export eventfd; readers use it to be woken on stop.
#include <sys/eventfd.h>
// Nor timerfd: TimerThread sleeps on one.
#include <sys/timerfd.h>
// Nor mallopt (MallocArenas).
#include <malloc.h>
#include <sys/prctl.h>
#include <linux/bpf_common.h>

// The netlink socket's calls with the glibc socket constants they need, named here rather than in
// the Swift file that imports this module (see the top).
static inline int vpnsup_netlink_socket(int protocol) {
    return socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
}
// MSG_TRUNC: the datagram's real length, larger than `length` when it was cut.
static inline long vpnsup_netlink_receive(int fd, void *buffer, unsigned long length, int wait) {
    return recv(fd, buffer, length, MSG_TRUNC | (wait ? 0 : MSG_DONTWAIT));
}

// For the system layer and the watchers (ReaderThread, WakeupEvent, NetlinkDecoder): constants
// and calls Swift cannot see.
static inline int vpnsup_eventfd_flags(void) { return EFD_CLOEXEC | EFD_NONBLOCK; }
// IFF_LOWER_UP lives in <linux/if.h>, which clashes with glibc's <net/if.h>; its value is ABI.
static inline unsigned int vpnsup_iff_lower_up(void) { return 1u << 16; }
// pthread_setname_np needs _GNU_SOURCE and prctl is variadic: neither reaches Swift as is.
static inline void vpnsup_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

// Classic BPF socket filter: the layout of struct sock_filter / sock_fprog (kernel ABI). Not
// <linux/filter.h>: including it here hides glibc's SOCK_* constants from Swift files of the
// importing targets that import only Glibc.
struct vpnsup_bpf_instruction { unsigned short code; unsigned char jt; unsigned char jf; unsigned int k; };
static inline int vpnsup_attach_socket_filter(int fd, struct vpnsup_bpf_instruction *program, unsigned short count) {
    struct { unsigned short len; struct vpnsup_bpf_instruction *filter; } fprog = { count, program };
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog);
}

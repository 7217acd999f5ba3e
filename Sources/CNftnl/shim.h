#pragma once
// glibc's <netinet/in.h> must come before <linux/netfilter.h>.
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/table.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/expr.h>
#include <libnftnl/set.h>
#include <libnftnl/common.h>

// --- vpnsup helpers: macros and flexible structs that do not import into Swift. ---

/// errno of an NLMSG_ERROR message (0 for an ACK), or -1 if it is too short to hold one.
static inline int vpnsup_nft_nlmsgerr_errno(const struct nlmsghdr *nlh) {
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(struct nlmsgerr)) return -1;
    const struct nlmsgerr *err = (const struct nlmsgerr *)mnl_nlmsg_get_payload(nlh);
    return -err->error;
}

/// The extended-ACK attribute `type` of an NLMSG_ERROR message, or NULL. With NETLINK_CAP_ACK the
/// request is not echoed (NLM_F_CAPPED), so the attributes follow struct nlmsgerr directly.
static inline const struct nlattr *vpnsup_nft_nlmsgerr_attr(const struct nlmsghdr *nlh, uint16_t type) {
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return NULL;
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(struct nlmsgerr)) return NULL;
    const struct nlmsgerr *err = (const struct nlmsgerr *)mnl_nlmsg_get_payload(nlh);
    size_t offset = sizeof(struct nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += err->msg.nlmsg_len - sizeof(struct nlmsghdr);
    if (offset > mnl_nlmsg_get_payload_len(nlh)) return NULL;
    const struct nlattr *attr;
    mnl_attr_for_each(attr, nlh, offset) {
        if (mnl_attr_get_type(attr) == type) return attr;
    }
    return NULL;
}

/// The kernel's human-readable error text (NLMSGERR_ATTR_MSG), or NULL.
static inline const char *vpnsup_nft_extack_message(const struct nlmsghdr *nlh) {
    const struct nlattr *attr = vpnsup_nft_nlmsgerr_attr(nlh, NLMSGERR_ATTR_MSG);
    if (attr == NULL || mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) return NULL;
    return mnl_attr_get_str(attr);
}

/// The type of a missing required attribute (NLMSGERR_ATTR_MISS_TYPE), or -1.
static inline int vpnsup_nft_extack_missing_type(const struct nlmsghdr *nlh) {
    const struct nlattr *attr = vpnsup_nft_nlmsgerr_attr(nlh, NLMSGERR_ATTR_MISS_TYPE);
    if (attr == NULL || mnl_attr_validate(attr, MNL_TYPE_U32) < 0) return -1;
    return (int)mnl_attr_get_u32(attr);
}

static inline uint32_t vpnsup_nft_nlmsg_align(uint32_t len) { return NLMSG_ALIGN(len); }

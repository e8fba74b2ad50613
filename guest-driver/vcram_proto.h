/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vcram device protocol, version 1.4 (device/PROTOCOL.md).
 *
 * All fields are little-endian.  The driver never trusts what the device
 * wrote: responses and events are copied out and checked before use.
 */
#ifndef _VCRAM_PROTO_H
#define _VCRAM_PROTO_H

#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/stddef.h>
#include <linux/types.h>

#define VCRAM_MAGIC		0x4d524356u	/* "VCRM" */
#define VCRAM_VERSION_MAJOR	1
#define VCRAM_PAGE_SIZE		4096
#define VCRAM_RQ		0
#define VCRAM_EVQ		1
#define VCRAM_NR_VQS		2
#define VCRAM_MAX_RANGES	1024
#define VCRAM_MAX_CHAIN_DESCS	64

#define VCRAM_REQ_DISCARD	1
#define VCRAM_REQ_COMMIT	2
#define VCRAM_REQ_RESET		3	/* since 1.2: the whole window, no ranges */
#define VCRAM_REQ_NOMINATE	4	/* since 1.3: the costliest pages, no ranges;
					 * since 1.4 with an optional page limit
					 */

/* NOMINATE: entries after the response, and their classes (worst first) */
#define VCRAM_MAX_NOMINATIONS		1024
#define VCRAM_MAX_NOMINATION_PAGES	512
#define VCRAM_NOM_OVERFLOW	1	/* written, not stored */
#define VCRAM_NOM_RAW		2	/* stored uncompressed */
#define VCRAM_NOM_POOR		3	/* compressed to half a page or more */

#define VCRAM_S_OK		0
#define VCRAM_S_BAD_REQUEST	1
#define VCRAM_S_UNSUPPORTED	2
#define VCRAM_S_OUT_OF_RANGE	3
#define VCRAM_S_OVERLAP		4
#define VCRAM_S_NO_WINDOW	5
#define VCRAM_S_DEVICE_ERROR	6
#define VCRAM_S_MAX		VCRAM_S_DEVICE_ERROR
#define VCRAM_NO_RANGE		0xffffffffu

#define VCRAM_EVT_PRESSURE	1
#define VCRAM_EVT_OVERFLOW	2
#define VCRAM_LEVEL_NORMAL	0
#define VCRAM_LEVEL_LOW		1
#define VCRAM_LEVEL_HIGH	2

#define VCRAM_ST_WINDOW_OK	BIT(0)
#define VCRAM_ST_WINDOW_BAD	BIT(1)
#define VCRAM_ST_OVERFLOW	BIT(2)

/* Config space, read-only, 128 bytes */
struct vcram_config {
	__le32 magic;			/* 0x00 */
	__le16 version_major;		/* 0x04 */
	__le16 version_minor;		/* 0x06 */
	__le32 node;			/* 0x08 */
	__le32 page_size;		/* 0x0c */
	__le64 window_base;		/* 0x10 */
	__le64 window_size;		/* 0x18 */
	__le64 physical_capacity;	/* 0x20 */
	__le32 low_watermark;		/* 0x28 */
	__le32 high_watermark;		/* 0x2c */
	__le32 status;			/* 0x30 */
	__le32 pressure_level;		/* 0x34 */
	__le32 max_ranges;		/* 0x38 */
	__le32 event_size;		/* 0x3c */
	__le64 physical_used;		/* 0x40 */
	__le64 stored_pages;		/* 0x48 */
	__le64 same_pages;		/* 0x50 */
	__le64 compressed_bytes;	/* 0x58 */
	__le64 overflow_pages;		/* 0x60 */
	__le64 raw_pages;		/* 0x68 */
	__le64 event_seq;		/* 0x70 */
	__le32 granule;			/* 0x78 */
	__le32 zero_pages;		/* 0x7c, protocol 1.1 */
};

/* Request header, device-readable, followed by nr_ranges ranges */
struct vcram_req_header {
	__le32 type;
	__le32 nr_ranges;
	__le64 tag;
};

/* One range, device-readable */
struct vcram_range {
	__le64 addr;
	__le32 npages;
	__le32 reserved;
};

/* Response, device-writable */
struct vcram_resp {
	__le32 status;
	__le32 bad_range;
	__le64 pages_done;
	__le64 pages_overflowed;
};

/* NOMINATE page limit (since 1.4), device-readable, after the header */
struct vcram_nominate_args {
	__le32 max_pages;
	__le32 reserved;
};

/* NOMINATE answer entry, device-writable, after the response */
struct vcram_nomination {
	__le64 addr;
	__le32 npages;
	__le32 class;
};

/* Event record, device-writable */
struct vcram_event {
	__le32 type;
	__le32 level;
	__le64 seq;
	__le64 physical_used;
	__le64 addr;
	__le32 npages;
	__le32 lost;
	__le64 overflow_total;
};

static inline void vcram_proto_check_layout(void)
{
	BUILD_BUG_ON(sizeof(struct vcram_config) != 128);
	BUILD_BUG_ON(offsetof(struct vcram_config, node) != 0x08);
	BUILD_BUG_ON(offsetof(struct vcram_config, window_base) != 0x10);
	BUILD_BUG_ON(offsetof(struct vcram_config, physical_capacity) != 0x20);
	BUILD_BUG_ON(offsetof(struct vcram_config, status) != 0x30);
	BUILD_BUG_ON(offsetof(struct vcram_config, max_ranges) != 0x38);
	BUILD_BUG_ON(offsetof(struct vcram_config, event_size) != 0x3c);
	BUILD_BUG_ON(offsetof(struct vcram_config, physical_used) != 0x40);
	BUILD_BUG_ON(offsetof(struct vcram_config, overflow_pages) != 0x60);
	BUILD_BUG_ON(offsetof(struct vcram_config, event_seq) != 0x70);
	BUILD_BUG_ON(offsetof(struct vcram_config, granule) != 0x78);
	BUILD_BUG_ON(sizeof(struct vcram_req_header) != 16);
	BUILD_BUG_ON(sizeof(struct vcram_range) != 16);
	BUILD_BUG_ON(offsetof(struct vcram_range, npages) != 8);
	BUILD_BUG_ON(sizeof(struct vcram_resp) != 24);
	BUILD_BUG_ON(offsetof(struct vcram_resp, pages_done) != 8);
	BUILD_BUG_ON(offsetof(struct vcram_resp, pages_overflowed) != 16);
	BUILD_BUG_ON(sizeof(struct vcram_nominate_args) != 8);
	BUILD_BUG_ON(sizeof(struct vcram_nomination) != 16);
	BUILD_BUG_ON(offsetof(struct vcram_nomination, class) != 12);
	BUILD_BUG_ON(sizeof(struct vcram_event) != 48);
	BUILD_BUG_ON(offsetof(struct vcram_event, seq) != 0x08);
	BUILD_BUG_ON(offsetof(struct vcram_event, addr) != 0x18);
	BUILD_BUG_ON(offsetof(struct vcram_event, npages) != 0x20);
	BUILD_BUG_ON(offsetof(struct vcram_event, lost) != 0x24);
	BUILD_BUG_ON(offsetof(struct vcram_event, overflow_total) != 0x28);
}

#endif /* _VCRAM_PROTO_H */

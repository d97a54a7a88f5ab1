/*
 * Native baseline of the virtio ring round trip (VIRTIO 1.3 §2.7 split, §2.8 packed): the same
 * workload, layout and validation as bench/baseline/ts-ring.ts, in plain C11, to put the wasm
 * core's figures next to what compiled C does on this machine.
 *
 * Build:  cc -O2 -std=c11 -o ring bench/native/ring.c
 * Run:    ./ring [--seconds S] [--warmup S] [--clock wall|cpu] [--layout split|packed|all] [--batch N|all]
 *                [--copy 0|1|all] [--size N] [--payload N] [--segments N]
 *         ./ring --selftest      (validation cases and long round trips; exit 1 on failure)
 * Output: one JSON line per combination, e.g.
 *   {"layout":"split","batch":32,"copy":true,"descPerSec":1.2e8,"descs":…,"seconds":0.3,…}
 * Exit status 1 if a side reports a protocol error or the final state check fails.
 *
 * One iteration = one batch round trip: the driver posts `batch` chains (each `segments`
 * device-readable descriptors over a fixed 64-byte buffer, with a u32 token), publishes them and
 * computes the kick decision; the device pops and validates every chain (copying its readable
 * bytes into a device-side sink in the copy variant), pushes used elements and publishes them;
 * the driver reclaims the used buffers and checks that the tokens come back in order.
 *
 * The rings live in one flat little-endian memory at the same offsets the TS baseline uses.
 * Driver and device run on one thread, so the ordering points of the spec are compiler fences
 * (atomic_thread_fence acquire/release: free on x86, as Linux's virt_wmb/virt_rmb); the TS
 * baseline, single-threaded too, has none. The full barrier the spec asks for before reading
 * the notification-suppression flags (§2.7.13.4.1, §2.8.21.3.1) matters only across threads and
 * is omitted on both sides for the same reason.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
 * Spec constants
 * ------------------------------------------------------------------------------------------- */

#define VIRTQ_DESC_F_NEXT 1u          /* §2.7.5 / §2.8.6 */
#define VIRTQ_DESC_F_WRITE 2u         /* §2.7.5 / §2.8.3 */
#define VIRTQ_DESC_F_INDIRECT 4u      /* §2.7.5.3 / §2.8.7 */
#define VIRTQ_DESC_F_AVAIL (1u << 7)  /* §2.8.1 */
#define VIRTQ_DESC_F_USED (1u << 15)  /* §2.8.1 */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1u /* §2.7.6, §2.7.7 */
#define VIRTQ_USED_F_NO_NOTIFY 1u     /* §2.7.8, §2.7.10 */
#define RING_EVENT_FLAGS_ENABLE 0u    /* §2.8.10, §2.8.14 */
#define RING_EVENT_FLAGS_DISABLE 1u
#define AVAIL_USED (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)

#define DESC_BYTES 16u
/* Descriptor field offsets: le64 addr; le32 len; then split: le16 flags, le16 next;
 * packed: le16 id, le16 flags. */
#define D_ADDR 0u
#define D_LEN 8u
#define D_SPLIT_FLAGS 12u
#define D_SPLIT_NEXT 14u
#define D_PACKED_ID 12u
#define D_PACKED_FLAGS 14u

/* Result codes: >= 0 is a value (head, id, token), ST_NONE means nothing to do, the rest are
 * sticky failures. The numbers match Status in ts-ring.ts. */
enum {
  ST_NONE = -1,
  ST_NO_SPACE = -2,
  ST_BAD_AVAIL_IDX = -3, /* avail.idx more than a ring ahead (§2.7.13) */
  ST_BAD_HEAD = -4,      /* head >= size (§2.7.6) */
  ST_BAD_NEXT = -5,      /* next >= size (§2.7.5) */
  ST_LOOP = -6,          /* chain longer than the queue (§2.7.5.2, §2.7.5.3.1 / §2.8.17) */
  ST_INDIRECT = -7,      /* not negotiated; INDIRECT|NEXT always invalid (§2.7.5.3.1, §2.8.19) */
  ST_ORDER = -8,         /* readable after writable (§2.7.4.2 / §2.8.17) */
  ST_TOO_LONG = -9,      /* total length > 2^32-1 (§2.7.5.2) */
  ST_BAD_ADDR = -10,     /* buffer outside the DMA region */
  ST_BAD_ID = -11,       /* id >= size */
  ST_NOT_IN_FLIGHT = -12,
  ST_BAD_USED_IDX = -13,
  ST_SINK_OVERFLOW = -14,
};

/* ---------------------------------------------------------------------------------------------
 * Little-endian access to the flat memory (memcpy compiles to plain moves)
 * ------------------------------------------------------------------------------------------- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(x) __builtin_bswap16(x)
#define LE32(x) __builtin_bswap32(x)
#define LE64(x) __builtin_bswap64(x)
#else
#define LE16(x) (x)
#define LE32(x) (x)
#define LE64(x) (x)
#endif

static inline uint16_t ld16(const uint8_t *m, uint32_t off) {
  uint16_t v;
  memcpy(&v, m + off, 2);
  return LE16(v);
}
static inline uint32_t ld32(const uint8_t *m, uint32_t off) {
  uint32_t v;
  memcpy(&v, m + off, 4);
  return LE32(v);
}
static inline uint64_t ld64(const uint8_t *m, uint32_t off) {
  uint64_t v;
  memcpy(&v, m + off, 8);
  return LE64(v);
}
static inline void st16(uint8_t *m, uint32_t off, uint16_t v) {
  v = LE16(v);
  memcpy(m + off, &v, 2);
}
static inline void st32(uint8_t *m, uint32_t off, uint32_t v) {
  v = LE32(v);
  memcpy(m + off, &v, 4);
}
static inline void st64(uint8_t *m, uint32_t off, uint64_t v) {
  v = LE64(v);
  memcpy(m + off, &v, 8);
}

/* Ordering points (see the header comment). */
#define publish_fence() atomic_thread_fence(memory_order_release)
#define consume_fence() atomic_thread_fence(memory_order_acquire)

/* ---------------------------------------------------------------------------------------------
 * Shared configuration
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  uint32_t size;       /* power of two, <= 32768 */
  uint32_t desc_area;  /* 16-aligned */
  uint32_t driver_area; /* split: avail ring; packed: driver event suppression */
  uint32_t device_area; /* split: used ring;  packed: device event suppression */
} ring_areas;

typedef struct {
  uint64_t ram_base, ram_end; /* DMA region [ram_base, ram_end) */
  bool copy;
  uint32_t sink_base, sink_slot_bytes, sink_mask;
} device_config;

/* A device-side chain walk's running state. */
typedef struct {
  uint32_t sink_pos, sink_room;
  uint64_t total;
  bool writable;
} walk_state;

/*
 * Validates one descriptor of a chain (same checks, same order as ts-ring.ts) and copies its
 * readable bytes into the sink when configured. Returns 0 or a negative status.
 */
static inline int check_desc(uint8_t *mem, const device_config *cfg, walk_state *w, uint32_t d,
                             uint16_t flags) {
  /* §2.7.5.3.1 / §2.8.19: INDIRECT with NEXT is invalid; INDIRECT alone needs
   * VIRTIO_F_INDIRECT_DESC, which this workload does not negotiate. */
  if (flags & VIRTQ_DESC_F_INDIRECT) return ST_INDIRECT;
  uint64_t addr = ld64(mem, d + D_ADDR);
  uint32_t len = ld32(mem, d + D_LEN);
  /* [addr, addr+len) inside the DMA region, written so that nothing overflows. With
   * ram_end <= 2^32 this rejects any nonzero high address half, as the TS check does. */
  if (addr < cfg->ram_base || addr > cfg->ram_end || len > cfg->ram_end - addr) return ST_BAD_ADDR;
  if (flags & VIRTQ_DESC_F_WRITE) {
    w->writable = true;
  } else {
    /* §2.7.4.2 / §2.8.17: device-readable descriptors come before device-writable ones. */
    if (w->writable) return ST_ORDER;
    if (cfg->copy) {
      if (len > w->sink_room) return ST_SINK_OVERFLOW;
      memcpy(mem + w->sink_pos, mem + addr, len);
      w->sink_pos += len;
      w->sink_room -= len;
    }
  }
  w->total += len;
  /* §2.7.5.2: a chain's total length fits in 32 bits. */
  if (w->total > UINT32_MAX) return ST_TOO_LONG;
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Split virtqueue (§2.7)
 *
 *   desc_area   struct virtq_desc  { le64 addr; le32 len; le16 flags; le16 next; } desc[size]
 *   driver_area struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }
 *   device_area struct virtq_used  { le16 flags; le16 idx; { le32 id; le32 len; } ring[size]; … }
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  uint8_t *mem;
  uint32_t size, mask, desc, avail, used;
  /* Driver-private bookkeeping (Linux desc_extra / desc_state), never read from the ring. */
  uint16_t *extra_next, *extra_count;
  uint32_t *tokens;
  uint8_t *in_flight;
  uint32_t free_head, num_free;
  uint16_t avail_idx_shadow, last_used_idx, used_idx_cache;
  uint32_t last_len;
  int broken;
} split_driver;

typedef struct {
  uint8_t *mem;
  uint32_t size, mask, desc, avail, used;
  device_config cfg;
  uint16_t last_avail_idx, avail_idx_cache, used_idx_shadow;
  uint32_t popped, chain_descs, chain_len;
  uint64_t descs_done;
  int broken;
} split_device;

static void split_driver_init(split_driver *q, uint8_t *mem, const ring_areas *a) {
  memset(q, 0, sizeof *q);
  q->mem = mem;
  q->size = a->size;
  q->mask = a->size - 1;
  q->desc = a->desc_area;
  q->avail = a->driver_area;
  q->used = a->device_area;
  q->extra_next = calloc(a->size, sizeof *q->extra_next);
  q->extra_count = calloc(a->size, sizeof *q->extra_count);
  q->tokens = calloc(a->size, sizeof *q->tokens);
  q->in_flight = calloc(a->size, 1);
  if (!q->extra_next || !q->extra_count || !q->tokens || !q->in_flight) abort();
  for (uint32_t i = 0; i < a->size; i++) q->extra_next[i] = (uint16_t)((i + 1) & q->mask);
  q->num_free = a->size;
  st16(mem, q->avail, 0);     /* avail.flags: interrupts wanted */
  st16(mem, q->avail + 2, 0); /* avail.idx */
}

/*
 * Adds a chain of `out` device-readable then `in` device-writable buffers (sg_addr/sg_len),
 * with a token. The avail entry is written now, avail.idx by kick_prepare. Returns the head
 * index or ST_NO_SPACE.
 */
static inline int split_add_buf(split_driver *q, const uint32_t *sg_addr, const uint32_t *sg_len,
                                uint32_t out, uint32_t in, uint32_t token) {
  uint32_t n = out + in;
  if (n == 0 || n > q->num_free) return ST_NO_SPACE;
  uint8_t *mem = q->mem;
  uint32_t head = q->free_head, i = head;
  for (uint32_t s = 0; s < n; s++) {
    uint32_t d = q->desc + i * DESC_BYTES;
    uint16_t next = q->extra_next[i];
    st64(mem, d + D_ADDR, sg_addr[s]);
    st32(mem, d + D_LEN, sg_len[s]);
    /* §2.7.4.2: device-readable descriptors before device-writable ones. */
    st16(mem, d + D_SPLIT_FLAGS,
         (uint16_t)((s < out ? 0 : VIRTQ_DESC_F_WRITE) | (s + 1 < n ? VIRTQ_DESC_F_NEXT : 0)));
    st16(mem, d + D_SPLIT_NEXT, next);
    i = next;
  }
  q->free_head = i;
  q->num_free -= n;
  q->extra_count[head] = (uint16_t)n;
  q->tokens[head] = token;
  q->in_flight[head] = 1;
  /* §2.7.13.2: the head goes in the next avail ring entry; invisible until avail.idx moves. */
  st16(mem, q->avail + 4 + (q->avail_idx_shadow & q->mask) * 2, (uint16_t)head);
  q->avail_idx_shadow++;
  return (int)head;
}

/* Publishes avail.idx; returns true if the device wants a notification (§2.7.10.1). */
static inline bool split_kick_prepare(split_driver *q) {
  /* §2.7.13.3.1: descriptors and ring entries must be visible before avail.idx. */
  publish_fence();
  st16(q->mem, q->avail + 2, q->avail_idx_shadow);
  /* §2.7.13.4.1: used.flags is read after avail.idx is published. */
  return (ld16(q->mem, q->used) & VIRTQ_USED_F_NO_NOTIFY) == 0;
}

/* Reclaims the next used buffer: its token (>= 0; length in last_len), ST_NONE, or an error. */
static inline int64_t split_get_buf(split_driver *q) {
  if (q->broken) return q->broken;
  uint16_t last = q->last_used_idx;
  if (last == q->used_idx_cache) {
    /* §2.7.14: read used.idx once the entries seen last time are consumed. */
    uint16_t idx = ld16(q->mem, q->used + 2);
    if (idx == last) return ST_NONE;
    if ((uint16_t)(idx - last) > q->size) return q->broken = ST_BAD_USED_IDX;
    q->used_idx_cache = idx;
    consume_fence();
  }
  uint32_t e = q->used + 4 + (last & q->mask) * 8;
  uint32_t id = ld32(q->mem, e);
  uint32_t len = ld32(q->mem, e + 4);
  /* The device controls `id`: bound it and check it is in flight before using it. */
  if (id >= q->size) return q->broken = ST_BAD_ID;
  if (!q->in_flight[id]) return q->broken = ST_NOT_IN_FLIGHT;
  q->in_flight[id] = 0;
  /* Splice the chain back onto the free list through the private links (detach_buf_split). */
  uint32_t n = q->extra_count[id], tail = id;
  for (uint32_t k = 1; k < n; k++) tail = q->extra_next[tail];
  q->extra_next[tail] = (uint16_t)q->free_head;
  q->free_head = id;
  q->num_free += n;
  q->last_used_idx = (uint16_t)(last + 1);
  q->last_len = len;
  return q->tokens[id];
}

static void split_device_init(split_device *v, uint8_t *mem, const ring_areas *a,
                              const device_config *cfg) {
  memset(v, 0, sizeof *v);
  v->mem = mem;
  v->size = a->size;
  v->mask = a->size - 1;
  v->desc = a->desc_area;
  v->avail = a->driver_area;
  v->used = a->device_area;
  v->cfg = *cfg;
  st16(mem, v->used, 0);     /* used.flags: notifications wanted */
  st16(mem, v->used + 2, 0); /* used.idx */
}

/* Pops and validates the next available chain: its head (>= 0), ST_NONE, or an error. */
static inline int split_pop_avail(split_device *v) {
  if (v->broken) return v->broken;
  uint8_t *mem = v->mem;
  uint16_t last = v->last_avail_idx;
  if (last == v->avail_idx_cache) {
    uint16_t idx = ld16(mem, v->avail + 2);
    if (idx == last) return ST_NONE;
    /* The driver controls avail.idx: it cannot run more than a ring ahead. */
    if ((uint16_t)(idx - last) > v->size) return v->broken = ST_BAD_AVAIL_IDX;
    v->avail_idx_cache = idx;
    consume_fence(); /* ring entries and descriptors are read after avail.idx */
  }
  uint32_t head = ld16(mem, v->avail + 4 + (last & v->mask) * 2);
  /* §2.7.6: the entry names a chain head; the driver controls it, so bound it. */
  if (head >= v->size) return v->broken = ST_BAD_HEAD;
  walk_state w = {
      .sink_pos = v->cfg.sink_base + (v->popped & v->cfg.sink_mask) * v->cfg.sink_slot_bytes,
      .sink_room = v->cfg.sink_slot_bytes,
      .total = 0,
      .writable = false,
  };
  uint32_t i = head, count = 0;
  for (;;) {
    /* §2.7.5.2 / §2.7.5.3.1: no chain is longer than the queue size; more means a loop. */
    if (++count > v->size) return v->broken = ST_LOOP;
    uint32_t d = v->desc + i * DESC_BYTES;
    uint16_t flags = ld16(mem, d + D_SPLIT_FLAGS);
    int r = check_desc(mem, &v->cfg, &w, d, flags);
    if (r) return v->broken = r;
    if (!(flags & VIRTQ_DESC_F_NEXT)) break;
    i = ld16(mem, d + D_SPLIT_NEXT);
    if (i >= v->size) return v->broken = ST_BAD_NEXT;
  }
  v->last_avail_idx = (uint16_t)(last + 1);
  v->popped++;
  v->chain_descs = count;
  v->chain_len = (uint32_t)w.total;
  return (int)head;
}

/* Writes used element {id, len}; visible after split_publish_used. */
static inline void split_push_used(split_device *v, uint32_t id, uint32_t len, uint32_t ndescs) {
  (void)ndescs; /* a split id names the whole chain */
  uint32_t e = v->used + 4 + (v->used_idx_shadow & v->mask) * 8;
  st32(v->mem, e, id);
  st32(v->mem, e + 4, len);
  v->used_idx_shadow++;
}

/* Publishes used.idx; returns true if the driver wants an interrupt (§2.7.7.2). */
static inline bool split_publish_used(split_device *v) {
  /* §2.7.8.2: used elements (and len) must be visible before used.idx. */
  publish_fence();
  st16(v->mem, v->used + 2, v->used_idx_shadow);
  return (ld16(v->mem, v->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT) == 0;
}

/* The device's datapath loop: pop up to budget chains, push {id, 0} for each. */
static inline int split_process(split_device *v, uint32_t budget) {
  uint32_t done = 0;
  while (done < budget) {
    int id = split_pop_avail(v);
    if (id < 0) {
      if (id == ST_NONE) break;
      return id;
    }
    split_push_used(v, (uint32_t)id, 0, v->chain_descs);
    v->descs_done += v->chain_descs;
    done++;
  }
  return (int)done;
}

/* ---------------------------------------------------------------------------------------------
 * Packed virtqueue (§2.8)
 *
 *   desc_area   struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; } desc[size]
 *   driver_area struct pvirtq_event_suppress { le16 desc; le16 flags; }   (driver writes)
 *   device_area struct pvirtq_event_suppress { le16 desc; le16 flags; }   (device writes)
 *
 * Wrap counters start at 1 and flip when an index passes the end of the ring (§2.8.1). A side
 * whose counter is W reads AVAIL=W,USED=!W as available and AVAIL=USED=W as used.
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  uint8_t *mem;
  uint32_t size, desc, device_event;
  /* Driver-private bookkeeping by buffer id. */
  uint16_t *id_next, *id_count;
  uint32_t *tokens;
  uint8_t *in_flight;
  uint32_t free_id, num_free;
  uint32_t next_avail, avail_wrap, last_used, used_wrap;
  uint32_t last_len;
  int broken;
} packed_driver;

typedef struct {
  uint8_t *mem;
  uint32_t size, desc, driver_event;
  device_config cfg;
  uint32_t next_avail, avail_wrap, next_used, used_wrap;
  int32_t pending_used; /* slot of the batch's first used element, or -1 */
  uint16_t pending_used_flags;
  uint32_t popped, chain_descs, chain_len;
  uint64_t descs_done;
  int broken;
} packed_device;

static void packed_driver_init(packed_driver *q, uint8_t *mem, const ring_areas *a) {
  memset(q, 0, sizeof *q);
  q->mem = mem;
  q->size = a->size;
  q->desc = a->desc_area;
  q->device_event = a->device_area;
  q->id_next = calloc(a->size, sizeof *q->id_next);
  q->id_count = calloc(a->size, sizeof *q->id_count);
  q->tokens = calloc(a->size, sizeof *q->tokens);
  q->in_flight = calloc(a->size, 1);
  if (!q->id_next || !q->id_count || !q->tokens || !q->in_flight) abort();
  for (uint32_t i = 0; i < a->size; i++) q->id_next[i] = (uint16_t)(i + 1); /* size ends it */
  q->num_free = a->size;
  q->avail_wrap = q->used_wrap = 1;
  /* §2.8.13: the descriptor ring is zero-initialised. */
  for (uint32_t i = 0; i < a->size; i++) st16(mem, q->desc + i * DESC_BYTES + D_PACKED_FLAGS, 0);
  st32(mem, a->driver_area, 0); /* driver event suppression: RING_EVENT_FLAGS_ENABLE */
}

/* Adds a chain and makes it available at once, head flags last (§2.8.6). Returns the id. */
static inline int packed_add_buf(packed_driver *q, const uint32_t *sg_addr, const uint32_t *sg_len,
                                 uint32_t out, uint32_t in, uint32_t token) {
  uint32_t n = out + in;
  if (n == 0 || n > q->num_free) return ST_NO_SPACE;
  uint8_t *mem = q->mem;
  uint32_t id = q->free_id; /* num_free >= 1 implies a free id */
  q->free_id = q->id_next[id];
  uint32_t head = q->next_avail, i = head, wrap = q->avail_wrap;
  /* §2.8.1: available = AVAIL set to W, USED to !W. */
  uint16_t avail_bits = (uint16_t)(wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
  uint16_t head_flags = 0;
  for (uint32_t s = 0; s < n; s++) {
    uint32_t d = q->desc + i * DESC_BYTES;
    st64(mem, d + D_ADDR, sg_addr[s]);
    st32(mem, d + D_LEN, sg_len[s]);
    st16(mem, d + D_PACKED_ID, (uint16_t)id);
    uint16_t flags = (uint16_t)(avail_bits | (s < out ? 0 : VIRTQ_DESC_F_WRITE) |
                                (s + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
    /* §2.8.6: the head's flags go last, after the rest of its chain. */
    if (s == 0)
      head_flags = flags;
    else
      st16(mem, d + D_PACKED_FLAGS, flags);
    if (++i == q->size) {
      i = 0;
      wrap ^= 1;
      avail_bits = (uint16_t)(wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
    }
  }
  q->next_avail = i;
  q->avail_wrap = wrap;
  q->num_free -= n;
  q->id_count[id] = (uint16_t)n;
  q->tokens[id] = token;
  q->in_flight[id] = 1;
  /* §2.8.21.1.1: the rest of the chain must be visible before the head's flags. */
  publish_fence();
  st16(mem, q->desc + head * DESC_BYTES + D_PACKED_FLAGS, head_flags);
  return (int)id;
}

/* Kick decision: true unless the device event suppression flags say DISABLE (§2.8.21.3). */
static inline bool packed_kick_prepare(packed_driver *q) {
  return ld16(q->mem, q->device_event + 2) != RING_EVENT_FLAGS_DISABLE;
}

static inline int64_t packed_get_buf(packed_driver *q) {
  if (q->broken) return q->broken;
  uint8_t *mem = q->mem;
  uint32_t d = q->desc + q->last_used * DESC_BYTES;
  uint16_t flags = ld16(mem, d + D_PACKED_FLAGS);
  /* §2.8.1: used when AVAIL == USED == our used wrap counter. */
  if ((flags & AVAIL_USED) != (q->used_wrap ? AVAIL_USED : 0)) return ST_NONE;
  consume_fence(); /* §2.8.22: id and len are read after the flags */
  uint32_t id = ld16(mem, d + D_PACKED_ID);
  uint32_t len = ld32(mem, d + D_LEN);
  if (id >= q->size) return q->broken = ST_BAD_ID;
  if (!q->in_flight[id]) return q->broken = ST_NOT_IN_FLIGHT;
  q->in_flight[id] = 0;
  /* The chain's length comes from private state, never from the ring. */
  uint32_t n = q->id_count[id];
  q->id_next[id] = (uint16_t)q->free_id;
  q->free_id = id;
  q->num_free += n;
  /* §2.8.6: one used element stands for the whole chain; skip all of its slots. */
  uint32_t next = q->last_used + n;
  if (next >= q->size) {
    next -= q->size;
    q->used_wrap ^= 1;
  }
  q->last_used = next;
  q->last_len = len;
  return q->tokens[id];
}

static void packed_device_init(packed_device *v, uint8_t *mem, const ring_areas *a,
                               const device_config *cfg) {
  memset(v, 0, sizeof *v);
  v->mem = mem;
  v->size = a->size;
  v->desc = a->desc_area;
  v->driver_event = a->driver_area;
  v->cfg = *cfg;
  v->avail_wrap = v->used_wrap = 1;
  v->pending_used = -1;
  st32(mem, a->device_area, 0); /* device event suppression: RING_EVENT_FLAGS_ENABLE */
}

static inline int packed_pop_avail(packed_device *v) {
  if (v->broken) return v->broken;
  uint8_t *mem = v->mem;
  uint32_t i = v->next_avail, wrap = v->avail_wrap;
  uint32_t d = v->desc + i * DESC_BYTES;
  uint16_t flags = ld16(mem, d + D_PACKED_FLAGS);
  /* §2.8.1, §2.8.15: available when AVAIL == our wrap counter and USED != it. */
  if ((flags & AVAIL_USED) != (wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED)) return ST_NONE;
  consume_fence(); /* the chain is read after its head's flags */
  walk_state w = {
      .sink_pos = v->cfg.sink_base + (v->popped & v->cfg.sink_mask) * v->cfg.sink_slot_bytes,
      .sink_room = v->cfg.sink_slot_bytes,
      .total = 0,
      .writable = false,
  };
  uint32_t count = 0;
  for (;;) {
    /* §2.8.17: no list is longer than the queue size. */
    if (++count > v->size) return v->broken = ST_LOOP;
    int r = check_desc(mem, &v->cfg, &w, d, flags);
    if (r) return v->broken = r;
    if (!(flags & VIRTQ_DESC_F_NEXT)) break;
    /* §2.8.6, §2.8.18: the list continues in ring order, wrapping at the end of the ring. */
    if (++i == v->size) {
      i = 0;
      wrap ^= 1;
    }
    d = v->desc + i * DESC_BYTES;
    flags = ld16(mem, d + D_PACKED_FLAGS);
  }
  /* §2.8.6: the buffer id is in the list's last descriptor. */
  uint32_t id = ld16(mem, d + D_PACKED_ID);
  if (id >= v->size) return v->broken = ST_BAD_ID;
  if (++i == v->size) {
    i = 0;
    wrap ^= 1;
  }
  v->next_avail = i;
  v->avail_wrap = wrap;
  v->popped++;
  v->chain_descs = count;
  v->chain_len = (uint32_t)w.total;
  return (int)id;
}

/* Writes the used element for `id` at next_used and skips the chain's slots (§2.8.2, §2.8.6);
 * the batch's first element becomes visible in packed_publish_used. */
static inline void packed_push_used(packed_device *v, uint32_t id, uint32_t len, uint32_t ndescs) {
  uint32_t d = v->desc + v->next_used * DESC_BYTES;
  st16(v->mem, d + D_PACKED_ID, (uint16_t)id);
  st32(v->mem, d + D_LEN, len);
  /* §2.8.1: a used descriptor has AVAIL == USED == the device's used wrap counter. */
  uint16_t flags = (uint16_t)(v->used_wrap ? AVAIL_USED : 0);
  if (v->pending_used < 0) {
    v->pending_used = (int32_t)v->next_used;
    v->pending_used_flags = flags;
  } else {
    st16(v->mem, d + D_PACKED_FLAGS, flags);
  }
  uint32_t next = v->next_used + ndescs;
  if (next >= v->size) {
    next -= v->size;
    v->used_wrap ^= 1;
  }
  v->next_used = next;
}

static inline bool packed_publish_used(packed_device *v) {
  if (v->pending_used >= 0) {
    /* §2.8.9: the batch's other used elements must be visible before the first one's flags. */
    publish_fence();
    st16(v->mem, v->desc + (uint32_t)v->pending_used * DESC_BYTES + D_PACKED_FLAGS,
         v->pending_used_flags);
    v->pending_used = -1;
  }
  return ld16(v->mem, v->driver_event + 2) != RING_EVENT_FLAGS_DISABLE;
}

static inline int packed_process(packed_device *v, uint32_t budget) {
  uint32_t done = 0;
  while (done < budget) {
    int id = packed_pop_avail(v);
    if (id < 0) {
      if (id == ST_NONE) break;
      return id;
    }
    packed_push_used(v, (uint32_t)id, 0, v->chain_descs);
    v->descs_done += v->chain_descs;
    done++;
  }
  return (int)done;
}

/* ---------------------------------------------------------------------------------------------
 * The round-trip workload
 * ------------------------------------------------------------------------------------------- */

#define MEM_BYTES (4u << 20)

typedef struct {
  bool split;
  uint32_t size, batch, segments, payload;
  bool copy;
  uint8_t *mem;
  ring_areas areas;
  device_config dev_cfg;
  uint32_t buf_base, buf_stride;
  uint32_t *sg_addr, *sg_len; /* buffer j's scatter list at [j * segments] */
  split_driver sd;
  split_device sv;
  packed_driver pd;
  packed_device pv;
  /* counters */
  uint32_t next_token, expect_token, checksum;
  uint64_t iterations, chains, mismatches, kicks, calls;
  int error;
  const char *error_where;
} workload;

static uint32_t align_up(uint32_t x, uint32_t a) { return (x + a - 1) / a * a; }

/* Byte b of driver buffer j: distinct per buffer so a misrouted copy shows (as ts-ring.ts). */
static uint8_t payload_byte(uint32_t j, uint32_t b) { return (uint8_t)((j * 131 + b * 7 + 1) & 0xff); }

static int workload_init(workload *w, bool split, uint32_t size, uint32_t batch, bool copy,
                         uint32_t payload, uint32_t segments) {
  memset(w, 0, sizeof *w);
  if (size == 0 || size > 32768 || (size & (size - 1)) != 0) return -1;
  if (segments == 0 || segments > payload || batch == 0 || (uint64_t)batch * segments > size) return -1;
  w->split = split;
  w->size = size;
  w->batch = batch;
  w->copy = copy;
  w->payload = payload;
  w->segments = segments;
  /* Same layout as workloadLayout() in ts-ring.ts. */
  uint32_t desc = 0x1000, driver, device, ring_end;
  if (split) {
    driver = desc + DESC_BYTES * size;
    device = align_up(driver + 6 + 2 * size, 4);
    ring_end = device + 6 + 8 * size;
  } else {
    driver = desc + DESC_BYTES * size;
    device = driver + 4;
    ring_end = device + 4;
  }
  w->areas = (ring_areas){size, desc, driver, device};
  w->buf_base = align_up(ring_end, 4096);
  w->buf_stride = align_up(payload, 64);
  uint32_t ram_end = w->buf_base + size * w->buf_stride;
  uint32_t sink_base = align_up(ram_end, 4096);
  uint32_t sink_slot = align_up(payload, 64);
  if ((uint64_t)sink_base + (uint64_t)size * sink_slot > MEM_BYTES) return -1;
  w->dev_cfg = (device_config){0x1000, ram_end, copy, sink_base, sink_slot, size - 1};

  w->mem = aligned_alloc(4096, MEM_BYTES);
  w->sg_addr = calloc((size_t)size * segments, sizeof *w->sg_addr);
  w->sg_len = calloc((size_t)size * segments, sizeof *w->sg_len);
  if (!w->mem || !w->sg_addr || !w->sg_len) abort();
  memset(w->mem, 0, MEM_BYTES);
  uint32_t seg_len = payload / segments;
  for (uint32_t j = 0; j < size; j++) {
    uint32_t base = w->buf_base + j * w->buf_stride;
    for (uint32_t b = 0; b < payload; b++) w->mem[base + b] = payload_byte(j, b);
    for (uint32_t s = 0; s < segments; s++) {
      w->sg_addr[j * segments + s] = base + s * seg_len;
      w->sg_len[j * segments + s] = s + 1 < segments ? seg_len : payload - s * seg_len;
    }
  }
  if (split) {
    split_driver_init(&w->sd, w->mem, &w->areas);
    split_device_init(&w->sv, w->mem, &w->areas, &w->dev_cfg);
  } else {
    packed_driver_init(&w->pd, w->mem, &w->areas);
    packed_device_init(&w->pv, w->mem, &w->areas, &w->dev_cfg);
  }
  return 0;
}

static void workload_free(workload *w) {
  free(w->mem);
  free(w->sg_addr);
  free(w->sg_len);
  if (w->split) {
    free(w->sd.extra_next), free(w->sd.extra_count), free(w->sd.tokens), free(w->sd.in_flight);
  } else {
    free(w->pd.id_next), free(w->pd.id_count), free(w->pd.tokens), free(w->pd.in_flight);
  }
}

#define FAIL(where, code)        \
  do {                           \
    w->error = (int)(code);      \
    w->error_where = (where);    \
    return 0;                    \
  } while (0)

/* One function per layout so each loop is specialised, as in the TS baseline. Returns the
 * descriptors moved, or 0 with w->error set. */
static uint64_t run_split(workload *w, uint64_t n) {
  split_driver *q = &w->sd;
  split_device *v = &w->sv;
  const uint32_t batch = w->batch, segs = w->segments, mask = w->size - 1;
  uint64_t descs0 = v->descs_done;
  uint32_t post = w->next_token, expect = w->expect_token, sum = w->checksum;
  uint64_t bad = 0;
  for (uint64_t it = 0; it < n; it++) {
    /* Driver: post the batch, publish it, decide on a kick. */
    for (uint32_t k = 0; k < batch; k++) {
      uint32_t j = (post & mask) * segs;
      int r = split_add_buf(q, w->sg_addr + j, w->sg_len + j, segs, 0, post);
      if (r < 0) FAIL("add_buf", r);
      post++;
    }
    if (split_kick_prepare(q)) w->kicks++;
    /* Device: pop, validate (and copy), push used, publish, decide on an interrupt. */
    int done = split_process(v, w->size);
    if (done < 0) FAIL("process", done);
    if (split_publish_used(v)) w->calls++;
    /* Driver: reclaim; the tokens must come back in order. */
    int64_t t;
    while ((t = split_get_buf(q)) >= 0) {
      bad += (uint32_t)t != expect;
      expect++;
      sum += (uint32_t)t + q->last_len;
    }
    if (t != ST_NONE) FAIL("get_buf", t);
  }
  w->next_token = post;
  w->expect_token = expect;
  w->checksum = sum;
  w->mismatches += bad;
  w->iterations += n;
  w->chains += n * batch;
  return v->descs_done - descs0;
}

static uint64_t run_packed(workload *w, uint64_t n) {
  packed_driver *q = &w->pd;
  packed_device *v = &w->pv;
  const uint32_t batch = w->batch, segs = w->segments, mask = w->size - 1;
  uint64_t descs0 = v->descs_done;
  uint32_t post = w->next_token, expect = w->expect_token, sum = w->checksum;
  uint64_t bad = 0;
  for (uint64_t it = 0; it < n; it++) {
    for (uint32_t k = 0; k < batch; k++) {
      uint32_t j = (post & mask) * segs;
      int r = packed_add_buf(q, w->sg_addr + j, w->sg_len + j, segs, 0, post);
      if (r < 0) FAIL("add_buf", r);
      post++;
    }
    if (packed_kick_prepare(q)) w->kicks++;
    int done = packed_process(v, w->size);
    if (done < 0) FAIL("process", done);
    if (packed_publish_used(v)) w->calls++;
    int64_t t;
    while ((t = packed_get_buf(q)) >= 0) {
      bad += (uint32_t)t != expect;
      expect++;
      sum += (uint32_t)t + q->last_len;
    }
    if (t != ST_NONE) FAIL("get_buf", t);
  }
  w->next_token = post;
  w->expect_token = expect;
  w->checksum = sum;
  w->mismatches += bad;
  w->iterations += n;
  w->chains += n * batch;
  return v->descs_done - descs0;
}

static uint64_t run(workload *w, uint64_t n) { return w->split ? run_split(w, n) : run_packed(w, n); }

/* The state checks of ts-ring.ts check(): returns NULL if consistent, else a description. */
static const char *workload_check(workload *w, char *buf, size_t cap) {
  uint32_t size = w->size;
  if (w->error) {
    snprintf(buf, cap, "%s failed with status %d", w->error_where, w->error);
    return buf;
  }
  if (w->mismatches) return snprintf(buf, cap, "%llu tokens out of order", (unsigned long long)w->mismatches), buf;
  if (w->expect_token != w->next_token) return "not every token came back";
  if (w->kicks != w->iterations || w->calls != w->iterations) return "kick/call count mismatch";
  /* Tokens 0..T-1 (mod 2^32) plus lengths (all 0). */
  uint64_t T = w->next_token;
  if ((uint32_t)(T * (T - 1) / 2) != w->checksum) return "token checksum mismatch";
  if (w->split) {
    uint16_t posted = (uint16_t)w->next_token;
    if (w->sd.num_free != size) return "driver lost descriptors";
    if (ld16(w->mem, w->areas.driver_area + 2) != posted) return "avail.idx mismatch";
    if (w->sv.last_avail_idx != posted || w->sv.used_idx_shadow != posted || w->sd.last_used_idx != posted)
      return "index mismatch";
    if (ld16(w->mem, w->areas.device_area + 2) != posted) return "used.idx mismatch";
  } else {
    uint64_t slots = w->chains * w->segments;
    uint32_t pos = (uint32_t)(slots % size), wrap = (slots / size) % 2 == 0 ? 1 : 0;
    if (w->pd.num_free != size) return "driver lost descriptors";
    if (w->pd.next_avail != pos || w->pd.avail_wrap != wrap || w->pv.next_avail != pos ||
        w->pv.avail_wrap != wrap || w->pv.next_used != pos || w->pv.used_wrap != wrap ||
        w->pd.last_used != pos || w->pd.used_wrap != wrap)
      return "packed index / wrap counter mismatch";
  }
  if (w->copy) {
    /* Sink slot s holds the last chain popped with number = s (mod size): driver buffer s. */
    uint64_t filled = w->chains < size ? w->chains : size;
    for (uint32_t s = 0; s < filled; s++)
      for (uint32_t b = 0; b < w->payload; b++)
        if (w->mem[w->dev_cfg.sink_base + s * w->dev_cfg.sink_slot_bytes + b] != payload_byte(s, b)) {
          snprintf(buf, cap, "sink slot %u byte %u differs from the payload", s, b);
          return buf;
        }
  }
  return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Timing and output
 * ------------------------------------------------------------------------------------------- */

/* --clock wall (CLOCK_MONOTONIC, the default) or cpu (CLOCK_PROCESS_CPUTIME_ID: this process's
 * CPU time, so that other load on a shared machine does not count against it; the JavaScript
 * bench measures the same way with --clock cpu). */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(bench_clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs one combination: warm-up, then timed chunks until `seconds` have passed. */
static int bench_one(bool split, uint32_t batch, bool copy, uint32_t size, uint32_t payload,
                     uint32_t segments, double seconds, double warmup) {
  workload w;
  if (workload_init(&w, split, size, batch, copy, payload, segments) != 0) {
    fprintf(stderr, "ring: invalid parameters (size %u, batch %u, segments %u, payload %u)\n", size,
            batch, segments, payload);
    return 2;
  }
  /* ~4096 chains per chunk: clock reads stay far below 0.1% of the time. */
  uint64_t chunk = 4096 / batch ? 4096 / batch : 1;
  double t0 = now_s();
  while (now_s() - t0 < warmup && !w.error) run(&w, chunk);
  uint64_t descs = 0, iterations0 = w.iterations;
  double start = now_s(), t;
  do {
    descs += run(&w, chunk);
    t = now_s();
  } while (t - start < seconds && !w.error);
  double elapsed = t - start;

  char buf[160];
  const char *err = workload_check(&w, buf, sizeof buf);
  const char *layout = split ? "split" : "packed";
  if (err) {
    fprintf(stderr, "ring: %s batch %u %s: %s\n", layout, batch, copy ? "copy" : "nocopy", err);
    workload_free(&w);
    return 1;
  }
  /* Fold the sink into the checksum so the copies are observable output. */
  uint32_t sink_sum = 0;
  for (uint32_t i = 0; i < size * w.dev_cfg.sink_slot_bytes; i++)
    sink_sum = sink_sum * 31 + w.mem[w.dev_cfg.sink_base + i];
  printf("{\"layout\":\"%s\",\"batch\":%u,\"copy\":%s,\"descPerSec\":%.6g,\"descs\":%llu,"
         "\"seconds\":%.4f,\"iterations\":%llu,\"size\":%u,\"payload\":%u,\"segments\":%u,"
         "\"checksum\":%u,\"sinkChecksum\":%u}\n",
         layout, batch, copy ? "true" : "false", (double)descs / elapsed, (unsigned long long)descs,
         elapsed, (unsigned long long)(w.iterations - iterations0), size, payload, segments, w.checksum, sink_sum);
  fflush(stdout);
  workload_free(&w);
  return 0;
}

/* ---------------------------------------------------------------------------------------------
 * --selftest: break one field of a hand-written ring per case (mirrors ts-ring.check.ts §3)
 * ------------------------------------------------------------------------------------------- */

typedef struct {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next, id;
} tdesc;

static int st_failed, st_passed;

static void expect_status(const char *what, int64_t got, int64_t want) {
  if (got == want) {
    st_passed++;
  } else {
    st_failed++;
    fprintf(stderr, "selftest FAIL %s: got %lld, want %lld\n", what, (long long)got, (long long)want);
  }
}

/* A fresh workload whose rings are written by hand: n descriptors from d[], then (split)
 * avail.idx = avail_idx with ring[0] = head. */
static void hand_ring(workload *w, bool split, bool copy, const tdesc *d, int n, uint16_t head,
                      uint16_t avail_idx) {
  if (workload_init(w, split, 256, 1, copy, 64, 1) != 0) abort();
  for (int i = 0; i < n; i++) {
    uint32_t o = w->areas.desc_area + (uint32_t)i * DESC_BYTES;
    st64(w->mem, o + D_ADDR, d[i].addr ? d[i].addr : w->buf_base);
    st32(w->mem, o + D_LEN, d[i].len);
    if (split) {
      st16(w->mem, o + D_SPLIT_FLAGS, d[i].flags);
      st16(w->mem, o + D_SPLIT_NEXT, d[i].next);
    } else {
      st16(w->mem, o + D_PACKED_ID, d[i].id);
      st16(w->mem, o + D_PACKED_FLAGS, (uint16_t)(d[i].flags | VIRTQ_DESC_F_AVAIL)); /* wrap 1 */
    }
  }
  if (split) {
    st16(w->mem, w->areas.driver_area + 4, head);
    st16(w->mem, w->areas.driver_area + 2, avail_idx);
  }
}

static int pop(workload *w) { return w->split ? split_pop_avail(&w->sv) : packed_pop_avail(&w->pv); }

static void case_pop(const char *what, bool split, const tdesc *d, int n, int want) {
  workload w;
  hand_ring(&w, split, false, d, n, 0, 1);
  char name[96];
  snprintf(name, sizeof name, "%s %s", split ? "split" : "packed", what);
  expect_status(name, pop(&w), want);
  expect_status(name, pop(&w), want); /* sticky */
  workload_free(&w);
}

static int selftest(void) {
  const uint16_t N = VIRTQ_DESC_F_NEXT, W = VIRTQ_DESC_F_WRITE, I = VIRTQ_DESC_F_INDIRECT;
  for (int l = 0; l < 2; l++) {
    bool split = l == 0;
    workload probe;
    if (workload_init(&probe, split, 256, 1, false, 64, 1) != 0) abort();
    uint64_t ram_base = probe.dev_cfg.ram_base, ram_end = probe.dev_cfg.ram_end;
    workload_free(&probe);

    /* A good chain: readable, zero-length at ram_end, writable ending at ram_end. */
    tdesc good[4] = {{0, 10, N, 1, 0}, {ram_end, 0, N, 2, 0}, {ram_end - 64, 64, N | W, 3, 0}, {0, 6, W, 0, 7}};
    workload w;
    hand_ring(&w, split, false, good, 4, 0, 1);
    expect_status("good chain", pop(&w), split ? 0 : 7);
    expect_status("good chain descs", split ? w.sv.chain_descs : w.pv.chain_descs, 4);
    expect_status("good chain len", split ? w.sv.chain_len : w.pv.chain_len, 80);
    expect_status("then empty", pop(&w), ST_NONE);
    workload_free(&w);

    case_pop("INDIRECT", split, (tdesc[]){{0, 16, I, 0, 0}}, 1, ST_INDIRECT);
    case_pop("INDIRECT|NEXT", split, (tdesc[]){{0, 16, I | N, 1, 0}, {0, 64, 0, 0, 0}}, 2, ST_INDIRECT);
    case_pop("ORDER", split, (tdesc[]){{0, 64, W | N, 1, 0}, {0, 64, 0, 0, 0}}, 2, ST_ORDER);
    case_pop("high half", split, (tdesc[]){{(1ull << 32) | 0x20000, 64, 0, 0, 0}}, 1, ST_BAD_ADDR);
    case_pop("below ram", split, (tdesc[]){{ram_base - 4, 64, 0, 0, 0}}, 1, ST_BAD_ADDR);
    case_pop("past ram end", split, (tdesc[]){{ram_end - 60, 64, 0, 0, 0}}, 1, ST_BAD_ADDR);
    case_pop("starts past end", split, (tdesc[]){{ram_end + 4, 0, 0, 0, 0}}, 1, ST_BAD_ADDR);
    case_pop("wraps 2^32", split, (tdesc[]){{0xfffffff0u, 0x20, 0, 0, 0}}, 1, ST_BAD_ADDR);

    /* A loop: split 0 -> 1 -> 0; packed: every slot chained with NEXT. */
    static tdesc ring[256];
    for (int i = 0; i < 256; i++) ring[i] = (tdesc){0, 1, N, (uint16_t)((i + 1) & 1), 0};
    case_pop("LOOP", split, ring, split ? 2 : 256, ST_LOOP);
    for (int i = 0; i < 256; i++) ring[i] = (tdesc){0, 1, i < 255 ? N : 0, (uint16_t)(i + 1), 3};
    hand_ring(&w, split, false, ring, 256, 0, 1);
    expect_status("size-long chain", pop(&w), split ? 0 : 3);
    workload_free(&w);

    /* Over 2^32-1 bytes, with a device whose DMA region is all of 32-bit space (no copy). */
    hand_ring(&w, split, false,
              (tdesc[]){{0, 0x80000000u, N, 1, 0}, {0x80000000u, 0x7fffffffu, N, 2, 0}, {0, 1, 0, 0, 0}}, 3, 0, 1);
    st64(w.mem, w.areas.desc_area + D_ADDR, 0); /* hand_ring maps addr 0 to the buffer */
    st64(w.mem, w.areas.desc_area + 2 * DESC_BYTES + D_ADDR, 0);
    w.dev_cfg.ram_base = 0, w.dev_cfg.ram_end = 1ull << 32;
    if (split) w.sv.cfg = w.dev_cfg;
    else w.pv.cfg = w.dev_cfg;
    expect_status("TOO_LONG", pop(&w), ST_TOO_LONG);
    workload_free(&w);

    hand_ring(&w, split, true, (tdesc[]){{0, 68, 0, 0, 0}}, 1, 0, 1);
    expect_status("SINK_OVERFLOW", pop(&w), ST_SINK_OVERFLOW);
    workload_free(&w);
  }
  workload w;
  hand_ring(&w, true, false, (tdesc[]){{0, 64, 0, 0, 0}}, 1, 0, 257);
  expect_status("BAD_AVAIL_IDX", pop(&w), ST_BAD_AVAIL_IDX);
  workload_free(&w);
  hand_ring(&w, true, false, (tdesc[]){{0, 64, 0, 0, 0}}, 1, 256, 1);
  expect_status("BAD_HEAD", pop(&w), ST_BAD_HEAD);
  workload_free(&w);
  hand_ring(&w, true, false, (tdesc[]){{0, 64, VIRTQ_DESC_F_NEXT, 256, 0}}, 1, 0, 1);
  expect_status("BAD_NEXT", pop(&w), ST_BAD_NEXT);
  workload_free(&w);
  hand_ring(&w, false, false, (tdesc[]){{0, 64, VIRTQ_DESC_F_NEXT, 0, 999}, {0, 64, 0, 0, 256}}, 2, 0, 0);
  expect_status("packed BAD_ID", pop(&w), ST_BAD_ID);
  workload_free(&w);

  /* Driver side: used.idx jump, used id >= size, id not in flight, double completion. */
  for (int c = 0; c < 4; c++) {
    uint32_t a = 0x20000, len = 64;
    if (workload_init(&w, true, 256, 1, false, 64, 1) != 0) abort();
    expect_status("split add_buf", split_add_buf(&w.sd, &a, &len, 1, 0, 42), 0);
    split_kick_prepare(&w.sd);
    uint32_t u = w.areas.device_area;
    static const uint32_t ids[4] = {0, 256, 9, 0};
    static const int wants[4] = {ST_BAD_USED_IDX, ST_BAD_ID, ST_NOT_IN_FLIGHT, ST_NOT_IN_FLIGHT};
    st32(w.mem, u + 4, ids[c]);
    st32(w.mem, u + 12, 0);
    st16(w.mem, u + 2, c == 0 ? 257 : c == 3 ? 2 : 1);
    if (c == 3) expect_status("first completion", split_get_buf(&w.sd), 42);
    expect_status("split driver check", split_get_buf(&w.sd), wants[c]);
    workload_free(&w);
  }
  for (int c = 0; c < 2; c++) {
    uint32_t a = 0x20000, len = 64;
    if (workload_init(&w, false, 256, 1, false, 64, 1) != 0) abort();
    expect_status("packed add_buf", packed_add_buf(&w.pd, &a, &len, 1, 0, 42), 0);
    expect_status("nothing used yet", packed_get_buf(&w.pd), ST_NONE);
    st16(w.mem, w.areas.desc_area + D_PACKED_ID, c == 0 ? 256 : 3);
    st16(w.mem, w.areas.desc_area + D_PACKED_FLAGS, AVAIL_USED);
    expect_status("packed driver check", packed_get_buf(&w.pd), c == 0 ? ST_BAD_ID : ST_NOT_IN_FLIGHT);
    workload_free(&w);
  }

  /* Split driver: out-of-order, partial completions of 2-descriptor chains keep the free list
   * intact (every descriptor in at most one chain in flight, every token returned once). */
  {
    if (workload_init(&w, true, 256, 1, false, 64, 1) != 0) abort();
    uint32_t a[2] = {0x20000, 0x20040}, len[2] = {64, 64};
    int32_t token_of[256];
    for (int i = 0; i < 256; i++) token_of[i] = -1;
    uint32_t token = 0, seed = 12345, bad = 0;
    for (int round = 0; round < 40; round++) {
      while (w.sd.num_free >= 2) {
        int h = split_add_buf(&w.sd, a, len, 1, 1, token);
        if (h < 0 || token_of[h] >= 0) bad++;
        else token_of[h] = (int32_t)token++;
      }
      split_kick_prepare(&w.sd);
      uint8_t seen[256] = {0};
      for (int h = 0; h < 256; h++) {
        if (token_of[h] < 0) continue;
        uint32_t i = (uint32_t)h;
        for (int n = 0; n < 2; n++) {
          if (seen[i]++) bad++;
          i = ld16(w.mem, w.areas.desc_area + i * DESC_BYTES + D_SPLIT_NEXT);
        }
      }
      /* The device completes a pseudo-random subset in a pseudo-random order. */
      uint16_t heads[256];
      int n = 0;
      for (int h = 0; h < 256; h++)
        if (token_of[h] >= 0 && ((seed = seed * 1103515245u + 12345u) >> 16) % 3 != 0) heads[n++] = (uint16_t)h;
      for (int k = n - 1; k > 0; k--) {
        int j = (int)(((seed = seed * 1103515245u + 12345u) >> 16) % (uint32_t)(k + 1));
        uint16_t t = heads[k];
        heads[k] = heads[j], heads[j] = t;
      }
      uint16_t base = w.sd.last_used_idx;
      for (int k = 0; k < n; k++) {
        uint32_t e = w.areas.device_area + 4 + ((uint16_t)(base + k) & 255u) * 8;
        st32(w.mem, e, heads[k]);
        st32(w.mem, e + 4, 0);
      }
      st16(w.mem, w.areas.device_area + 2, (uint16_t)(base + n));
      for (int k = 0; k < n; k++) {
        if (split_get_buf(&w.sd) != token_of[heads[k]]) bad++;
        token_of[heads[k]] = -1;
      }
      if (split_get_buf(&w.sd) != ST_NONE) bad++;
    }
    expect_status("split out-of-order completions", bad, 0);
    workload_free(&w);
  }

  /* Round trips past the u16 index wrap and many wrap-counter flips, 1 and 3 descriptors. */
  for (int l = 0; l < 2; l++)
    for (uint32_t segs = 1; segs <= 3; segs += 2) {
      uint32_t batches[3] = {1, 32, segs == 1 ? 256 : 85};
      for (int b = 0; b < 3; b++)
        for (int copy = 0; copy < 2; copy++) {
          if (workload_init(&w, l == 0, 256, batches[b], copy, 64, segs) != 0) abort();
          run(&w, 3 * 65536 / batches[b] + 100);
          char buf[160];
          const char *err = workload_check(&w, buf, sizeof buf);
          if (err) fprintf(stderr, "selftest round trip %s b%u s%u: %s\n", l ? "packed" : "split", batches[b], segs, err);
          expect_status("round trip", err == NULL, 1);
          workload_free(&w);
        }
    }
  printf("ring selftest: %d passed, %d failed\n", st_passed, st_failed);
  return st_failed ? 1 : 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: ring [--seconds S] [--warmup S] [--clock wall|cpu] [--layout split|packed|all] [--batch N|all]\n"
          "            [--copy 0|1|all] [--size N] [--payload N] [--segments N]\n"
          "       ring --selftest\n");
}

int main(int argc, char **argv) {
  double seconds = 0.3, warmup = 0.1;
  int layouts = 3;  /* bit 0 split, bit 1 packed */
  int copies = 3;   /* bit 0 nocopy, bit 1 copy */
  uint32_t batches[3] = {1, 32, 256}, nbatches = 3;
  uint32_t size = 256, payload = 64, segments = 1;
  if (argc == 2 && !strcmp(argv[1], "--selftest")) return selftest();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) return usage(), 2;
    i++;
    if (!strcmp(a, "--seconds")) seconds = atof(v);
    else if (!strcmp(a, "--warmup")) warmup = atof(v);
    else if (!strcmp(a, "--clock")) {
      if (!strcmp(v, "cpu")) bench_clock = CLOCK_PROCESS_CPUTIME_ID;
      else if (!strcmp(v, "wall")) bench_clock = CLOCK_MONOTONIC;
      else return usage(), 2;
    }
    else if (!strcmp(a, "--layout")) layouts = !strcmp(v, "split") ? 1 : !strcmp(v, "packed") ? 2 : 3;
    else if (!strcmp(a, "--copy")) copies = !strcmp(v, "0") ? 1 : !strcmp(v, "1") ? 2 : 3;
    else if (!strcmp(a, "--batch")) {
      if (strcmp(v, "all")) batches[0] = (uint32_t)strtoul(v, NULL, 10), nbatches = 1;
    } else if (!strcmp(a, "--size")) size = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(a, "--payload")) payload = (uint32_t)strtoul(v, NULL, 10);
    else if (!strcmp(a, "--segments")) segments = (uint32_t)strtoul(v, NULL, 10);
    else return usage(), 2;
  }
  if (!(seconds > 0) || !(warmup >= 0)) return usage(), 2;
  for (int l = 0; l < 2; l++) {
    if (!(layouts & (1 << l))) continue;
    for (uint32_t b = 0; b < nbatches; b++)
      for (int c = 0; c < 2; c++) {
        if (!(copies & (1 << c))) continue;
        int rc = bench_one(l == 0, batches[b], c == 1, size, payload, segments, seconds, warmup);
        if (rc) return rc;
      }
  }
  return 0;
}

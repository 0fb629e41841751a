/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for the Rust side of dm-arepl: the kernel exposes these as static
 * inline functions or macros, or they need C-only constructs (bio iteration,
 * variadic kthread naming, socket option plumbing).
 */
#ifndef AREPL_HELPERS_H
#define AREPL_HELPERS_H

#include <linux/blk_types.h>
#include <linux/spinlock_types.h>

struct bio_list;
struct block_device;
struct dm_io_client;
struct dm_target;
struct net;
struct page;
struct socket;
struct task_struct;

/* payload pages */
int arepl_pages_alloc(struct page **pages, unsigned int count);
void arepl_pages_put(struct page **pages, unsigned int count);
void *arepl_page_address(struct page *page);

/* bio */
unsigned int arepl_bio_op(const struct bio *bio);
bool arepl_bio_is_preflush(const struct bio *bio);
bool arepl_bio_is_fua(const struct bio *bio);
sector_t arepl_bio_sector(const struct bio *bio);
void arepl_bio_set_sector(struct bio *bio, sector_t sector);
unsigned int arepl_bio_size(const struct bio *bio);
void arepl_bio_copy_to_pages(const struct bio *bio, struct page **pages);
int arepl_read_pages(struct block_device *bdev, u64 offset, struct page **pages,
		     size_t len);
void arepl_bio_set_dev(struct bio *bio, struct block_device *bdev);
u32 arepl_crc32c(u32 crc, const void *data, size_t len);
void arepl_bio_list_add(struct bio_list *list, struct bio *bio);
struct bio *arepl_bio_list_pop(struct bio_list *list);
void arepl_dm_submit_bio(struct bio *bio);
void *arepl_bio_per_bio_data(struct bio *bio, size_t size);

/* device-mapper */
int arepl_dm_device_name(struct dm_target *ti, char *name, size_t len);

void arepl_dm_set_max_io_len(struct dm_target *ti, u32 sectors);
void arepl_dm_set_accounts_remapped_io(struct dm_target *ti);
void arepl_dm_io_hints(struct dm_target *ti, struct queue_limits *limits);
bool arepl_dm_disk_added(struct dm_target *ti);

/* synchronous I/O on a held device */
struct dm_io_client *arepl_io_client_create(void);
void arepl_io_client_destroy(struct dm_io_client *client);
#define AREPL_IO_FUA 1
#define AREPL_IO_PREFLUSH 2
int arepl_sync_io(struct dm_io_client *client, struct block_device *bdev,
		  u64 offset, void *buf, size_t len, bool write, u32 durability);
u64 arepl_bdev_bytes(struct block_device *bdev);

/* volumes of this module's targets: claimed while live, remembered once removed */
#define AREPL_REMEMBERED_LEN 48
int arepl_volume_claim(const char *name, u8 *remembered, bool *found);
void arepl_volume_release(const char *name, const u8 *remembered);
void arepl_volumes_forget(void);
void arepl_random_bytes(u8 *buf, size_t len);

/* allocation scope */
unsigned int arepl_memalloc_noio_save(void);
void arepl_memalloc_noio_restore(unsigned int flags);

/* irq-safe spinlock */
unsigned long arepl_spin_lock_irqsave(spinlock_t *lock);
void arepl_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

/* kthread */
struct task_struct *arepl_kthread_start(int (*fn)(void *data), void *data,
					 const char *name, const char *instance);
bool arepl_kthread_should_stop(void);
void arepl_kthread_park_until_stopped(void);
void arepl_kthread_stop(struct task_struct *task);

/* network */
struct net *arepl_current_net_get(void);
void arepl_net_put(struct net *net);
int arepl_tcp_connect(struct net *net, bool ipv6, const u8 *addr, u16 port,
		      unsigned int connect_timeout_ms, unsigned int send_wait_ms,
		      struct socket **out);
int arepl_sock_send(struct socket *sock, const void *head, size_t head_len,
		    const void *body, struct page *const *pages, size_t body_len,
		    bool more, size_t *done);
u64 arepl_sock_transport_acked(struct socket *sock);
void arepl_sock_set_recv_timeout(struct socket *sock, unsigned int timeout_ms);
int arepl_sock_recv_exact(struct socket *sock, void *buf, size_t len);
void arepl_sock_shutdown(struct socket *sock);
void arepl_sock_release(struct socket *sock);
int arepl_sock_enable_tls(struct socket *sock, const u8 *tx_key, const u8 *tx_salt,
			  const u8 *tx_iv, const u8 *rx_key, const u8 *rx_salt,
			  const u8 *rx_iv);

/* Pre-shared keys and the handshake's MACs. */
int arepl_logon_key_read(const char *description, u8 *buf, size_t buf_len);
int arepl_hmac_sha256(const u8 *key, size_t key_len, const u8 *const *parts,
		      const size_t *part_lens, size_t count, u8 *out);

#endif

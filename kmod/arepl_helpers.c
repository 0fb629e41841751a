// SPDX-License-Identifier: GPL-2.0
/*
 * Out-of-line helpers for the Rust side of dm-arepl: static inline functions and
 * macros Rust cannot call, and the few loops that are clearer next to the C API.
 */
#include <crypto/hash.h>
#include <keys/user-type.h>
#include <linux/crc32c.h>
#include <linux/key.h>
#include <linux/tls.h>
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/dm-io.h>
#include <linux/ioprio.h>
#include <linux/highmem.h>
#include <linux/pagemap.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/net.h>
#include <linux/nsproxy.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/tcp.h>
#include <net/net_namespace.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "arepl_helpers.h"

unsigned int arepl_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

bool arepl_bio_is_preflush(const struct bio *bio)
{
	return bio->bi_opf & REQ_PREFLUSH;
}

bool arepl_bio_is_fua(const struct bio *bio)
{
	return bio->bi_opf & REQ_FUA;
}

sector_t arepl_bio_sector(const struct bio *bio)
{
	return bio->bi_iter.bi_sector;
}

void arepl_bio_set_sector(struct bio *bio, sector_t sector)
{
	bio->bi_iter.bi_sector = sector;
}

unsigned int arepl_bio_size(const struct bio *bio)
{
	return bio->bi_iter.bi_size;
}

/*
 * A payload copy through the kernel's out-of-line memcpy, which picks its method by CPU
 * feature at boot. Left to itself, gcc expands a copy of unknown length inline as
 * `rep movsb`: the slowest copy on CPUs without fast short rep movs (FSRM), and under
 * QEMU's TCG a byte at a time.
 */
static void arepl_copy_bytes(void *to, const void *from, size_t len)
{
#ifdef CONFIG_X86_64
	__memcpy(to, from, len);
#else
	memcpy(to, from, len);
#endif
}

/*
 * Payload pages: order-0 pages from GFP_KERNEL, never highmem, so page_address() is
 * their mapping for as long as they live. Freed by put_page(): TCP may still hold a
 * reference to a page it was handed by arepl_sock_send().
 */
int arepl_pages_alloc(struct page **pages, unsigned int count)
{
	unsigned int i;

	for (i = 0; i < count; i++) {
		pages[i] = alloc_page(GFP_KERNEL | __GFP_NOWARN);
		if (!pages[i]) {
			arepl_pages_put(pages, i);
			return -ENOMEM;
		}
	}
	return 0;
}

void arepl_pages_put(struct page **pages, unsigned int count)
{
	unsigned int i;

	for (i = 0; i < count; i++)
		put_page(pages[i]);
}

void *arepl_page_address(struct page *page)
{
	return page_address(page);
}

/* Copies the bio's payload (bi_size bytes from bi_iter) into pages, from their start. */
void arepl_bio_copy_to_pages(const struct bio *bio, struct page **pages)
{
	struct bio_vec bv;
	struct bvec_iter iter;
	size_t at = 0;

	bio_for_each_segment(bv, (struct bio *)bio, iter) {
		const char *from = bvec_kmap_local(&bv);
		size_t done = 0;

		while (done < bv.bv_len) {
			size_t in_page = offset_in_page(at);
			size_t len = min_t(size_t, PAGE_SIZE - in_page, bv.bv_len - done);

			arepl_copy_bytes(page_address(pages[at >> PAGE_SHIFT]) + in_page,
					 from + done, len);
			done += len;
			at += len;
		}
		kunmap_local(from);
	}
}

/*
 * Reads len bytes (a multiple of 512) at byte offset of bdev into pages, from their
 * start, waiting for the reads.
 */
int arepl_read_pages(struct block_device *bdev, u64 offset, struct page **pages,
		     size_t len)
{
	size_t at = 0;

	while (at < len) {
		unsigned int count = min_t(size_t, DIV_ROUND_UP(len - at, PAGE_SIZE),
					   BIO_MAX_VECS);
		struct bio *bio = bio_alloc(bdev, count, REQ_OP_READ, GFP_NOIO);
		unsigned int i;
		int ret;

		bio->bi_iter.bi_sector = (offset + at) >> SECTOR_SHIFT;
		for (i = 0; i < count; i++) {
			size_t part = min_t(size_t, PAGE_SIZE, len - at);

			__bio_add_page(bio, pages[at >> PAGE_SHIFT], part, 0);
			at += part;
		}
		ret = submit_bio_wait(bio);
		bio_put(bio);
		if (ret)
			return ret;
	}
	return 0;
}

void arepl_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

/* CRC-32C register update over len bytes (no inversions), as linux/crc32c.h's. */
u32 arepl_crc32c(u32 crc, const void *data, size_t len)
{
	return crc32c(crc, data, len);
}

/* Bios the target defers from map to its copy-on-write thread (see bio.rs). */
void arepl_bio_list_add(struct bio_list *list, struct bio *bio)
{
	bio_list_add(list, bio);
}

struct bio *arepl_bio_list_pop(struct bio_list *list)
{
	return bio_list_pop(list);
}

/* Submits a bio the target took over with DM_MAPIO_SUBMITTED and remapped. */
void arepl_dm_submit_bio(struct bio *bio)
{
	dm_submit_bio_remap(bio, NULL);
}

void *arepl_bio_per_bio_data(struct bio *bio, size_t size)
{
	return dm_per_bio_data(bio, size);
}

/* The device's dmsetup name (not its "major:minor" internal name). */
int arepl_dm_device_name(struct dm_target *ti, char *name, size_t len)
{
	char full[DM_NAME_LEN];
	int err;

	err = dm_copy_name_and_uuid(dm_table_get_md(ti->table), full, NULL);
	if (err)
		return err;
	if (strscpy(name, full, len) < 0)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * Volumes of this module's targets. A live one is claimed: two targets streaming into
 * one volume would interleave two sequences on the replica, so a second claim fails.
 * A removed one that left nothing unsent keeps its history (AREPL_REMEMBERED_LEN bytes,
 * opaque here), so a target created again while the module stays loaded continues it.
 */
struct arepl_volume {
	struct list_head list;
	bool live;
	bool remembered;
	u8 history[AREPL_REMEMBERED_LEN];
	char name[];
};

static LIST_HEAD(arepl_volumes);
static DEFINE_MUTEX(arepl_volumes_lock);

static struct arepl_volume *arepl_volume_find(const char *name)
{
	struct arepl_volume *vol;

	list_for_each_entry(vol, &arepl_volumes, list)
		if (!strcmp(vol->name, name))
			return vol;
	return NULL;
}

int arepl_volume_claim(const char *name, u8 *remembered, bool *found)
{
	struct arepl_volume *vol;
	size_t len = strlen(name) + 1;
	int err = 0;

	*found = false;
	mutex_lock(&arepl_volumes_lock);
	vol = arepl_volume_find(name);
	if (vol && vol->live) {
		err = -EBUSY;
		goto out;
	}
	if (!vol) {
		vol = kzalloc(sizeof(*vol) + len, GFP_KERNEL);
		if (!vol) {
			err = -ENOMEM;
			goto out;
		}
		memcpy(vol->name, name, len);
		list_add(&vol->list, &arepl_volumes);
	}
	if (vol->remembered) {
		memcpy(remembered, vol->history, AREPL_REMEMBERED_LEN);
		*found = true;
		/* Taken: a second removal without a clean end must not find it again. */
		vol->remembered = false;
	}
	vol->live = true;
out:
	mutex_unlock(&arepl_volumes_lock);
	return err;
}

void arepl_volume_release(const char *name, const u8 *remembered)
{
	struct arepl_volume *vol;

	mutex_lock(&arepl_volumes_lock);
	vol = arepl_volume_find(name);
	if (vol) {
		vol->live = false;
		vol->remembered = remembered != NULL;
		if (remembered) {
			memcpy(vol->history, remembered, AREPL_REMEMBERED_LEN);
		} else {
			list_del(&vol->list);
			kfree(vol);
		}
	}
	mutex_unlock(&arepl_volumes_lock);
}

void arepl_volumes_forget(void)
{
	struct arepl_volume *vol, *next;

	mutex_lock(&arepl_volumes_lock);
	list_for_each_entry_safe(vol, next, &arepl_volumes, list) {
		list_del(&vol->list);
		kfree(vol);
	}
	mutex_unlock(&arepl_volumes_lock);
}

void arepl_random_bytes(u8 *buf, size_t len)
{
	get_random_bytes(buf, len);
}

unsigned int arepl_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void arepl_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

unsigned long arepl_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void arepl_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}

/*
 * Starts a kthread named "<name>/<instance>" and pins its task_struct, so that
 * arepl_kthread_stop() is safe even if the thread has already returned.
 */
struct task_struct *arepl_kthread_start(int (*fn)(void *data), void *data,
					 const char *name, const char *instance)
{
	struct task_struct *task;

	task = kthread_create(fn, data, "%s/%s", name, instance);
	if (IS_ERR(task))
		return task;
	get_task_struct(task);
	wake_up_process(task);
	return task;
}

bool arepl_kthread_should_stop(void)
{
	return kthread_should_stop();
}

/* For a thread whose work is done: sleep until kthread_stop() is called. */
void arepl_kthread_park_until_stopped(void)
{
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
}

void arepl_kthread_stop(struct task_struct *task)
{
	kthread_stop(task);
	put_task_struct(task);
}

struct net *arepl_current_net_get(void)
{
	return get_net(current->nsproxy->net_ns);
}

void arepl_net_put(struct net *net)
{
	put_net(net);
}

/*
 * Connects a kernel TCP socket in namespace net within connect_timeout_ms. Later, a
 * send waits at most send_wait_ms for buffer space before it returns to its caller,
 * which judges whether the peer is slow or gone; receives block until data or shutdown
 * (arepl_sock_set_recv_timeout bounds them).
 */
int arepl_tcp_connect(struct net *net, bool ipv6, const u8 *addr, u16 port,
		      unsigned int connect_timeout_ms, unsigned int send_wait_ms,
		      struct socket **out)
{
	struct sockaddr_storage ss = {};
	struct socket *sock;
	int addrlen, err;

	if (ipv6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		sin6->sin6_port = htons(port);
		addrlen = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
		sin->sin_port = htons(port);
		addrlen = sizeof(*sin);
	}

	err = sock_create_kern(net, ss.ss_family, SOCK_STREAM, IPPROTO_TCP, &sock);
	if (err)
		return err;
	sock->sk->sk_sndtimeo = msecs_to_jiffies(connect_timeout_ms);
	sock->sk->sk_allocation = GFP_NOIO;
	tcp_sock_set_nodelay(sock->sk);

	err = kernel_connect(sock, (struct sockaddr *)&ss, addrlen, 0);
	if (err) {
		sock_release(sock);
		/* A blocking connect that ran out of sk_sndtimeo says -EINPROGRESS. */
		return err == -EINPROGRESS ? -ETIMEDOUT : err;
	}
	WRITE_ONCE(sock->sk->sk_sndtimeo, msecs_to_jiffies(send_wait_ms));
	*out = sock;
	return 0;
}

/* Pages of the body handed to TCP per sendmsg. */
#define AREPL_SPLICE_PAGES 16

/*
 * Sends one frame, head then body, from byte *done on (a send that times out returns
 * -EAGAIN with *done advanced, to be called again). more: another frame follows at
 * once, so TCP may fill segments (MSG_MORE). The head is copied. The body is either
 * body_len bytes at `body`, copied, or, with `pages`, body_len bytes from the start of
 * those payload pages, handed to TCP without a copy (MSG_SPLICE_PAGES): the caller
 * promises their bytes never change again (a queued payload), as TCP may transmit or
 * retransmit them after this returns, holding its own page references.
 */
int arepl_sock_send(struct socket *sock, const void *head, size_t head_len,
		    const void *body, struct page *const *pages, size_t body_len,
		    bool more, size_t *done)
{
	size_t total = head_len + body_len;
	int sent;

	if (*done > total)
		return -EINVAL;
	while (*done < total) {
		struct bio_vec vecs[AREPL_SPLICE_PAGES];
		struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
		struct kvec vec;
		size_t len = 0;

		if (*done < head_len || !pages) {
			bool in_head = *done < head_len;

			vec.iov_base = in_head ? (char *)head + *done
					       : (char *)body + (*done - head_len);
			len = in_head ? head_len - *done : total - *done;
			vec.iov_len = len;
			iov_iter_kvec(&msg.msg_iter, ITER_SOURCE, &vec, 1, len);
		} else {
			size_t at = *done - head_len;
			unsigned int count = 0;

			while (at + len < body_len && count < AREPL_SPLICE_PAGES) {
				size_t from = at + len;
				size_t part = min_t(size_t, PAGE_SIZE - offset_in_page(from),
						    body_len - from);

				bvec_set_page(&vecs[count++], pages[from >> PAGE_SHIFT], part,
					      offset_in_page(from));
				len += part;
			}
			msg.msg_flags |= MSG_SPLICE_PAGES;
			iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, vecs, count, len);
		}
		if (more || *done + len < total)
			msg.msg_flags |= MSG_MORE;
		sent = sock_sendmsg(sock, &msg);
		if (sent < 0)
			return sent;
		if (sent == 0)
			return -EPIPE;
		*done += sent;
	}
	return 0;
}

/*
 * Bytes of this connection the peer's TCP acknowledged so far: it moves while the peer
 * host takes data in, even when the peer application reads slowly.
 */
u64 arepl_sock_transport_acked(struct socket *sock)
{
	return READ_ONCE(tcp_sk(sock->sk)->bytes_acked);
}

/* A receive waits at most timeout_ms for data (0: until data or shutdown). */
void arepl_sock_set_recv_timeout(struct socket *sock, unsigned int timeout_ms)
{
	WRITE_ONCE(sock->sk->sk_rcvtimeo,
		   timeout_ms ? msecs_to_jiffies(timeout_ms) : MAX_SCHEDULE_TIMEOUT);
}

/*
 * Receives exactly len bytes; -ECONNRESET when the peer closes first, -ETIMEDOUT when
 * the receive timeout passes first.
 */
int arepl_sock_recv_exact(struct socket *sock, void *buf, size_t len)
{
	struct kvec vec = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
	int got;

	iov_iter_kvec(&msg.msg_iter, ITER_DEST, &vec, 1, len);
	while (msg_data_left(&msg)) {
		got = sock_recvmsg(sock, &msg, MSG_WAITALL);
		if (got == -EAGAIN)
			return -ETIMEDOUT;
		if (got < 0)
			return got;
		if (got == 0)
			return -ECONNRESET;
	}
	return 0;
}

void arepl_sock_shutdown(struct socket *sock)
{
	kernel_sock_shutdown(sock, SHUT_RDWR);
}

void arepl_sock_release(struct socket *sock)
{
	sock_release(sock);
}

static void arepl_tls_info(struct tls12_crypto_info_aes_gcm_128 *info, const u8 *key,
			   const u8 *salt, const u8 *iv)
{
	memset(info, 0, sizeof(*info));
	info->info.version = TLS_1_3_VERSION;
	info->info.cipher_type = TLS_CIPHER_AES_GCM_128;
	memcpy(info->key, key, TLS_CIPHER_AES_GCM_128_KEY_SIZE);
	memcpy(info->salt, salt, TLS_CIPHER_AES_GCM_128_SALT_SIZE);
	memcpy(info->iv, iv, TLS_CIPHER_AES_GCM_128_IV_SIZE);
	/* Records are counted from 0 in each direction; rec_seq stays zero. */
}

/*
 * Hands the connected socket to the kernel's TLS record layer: from here on every byte
 * sent is sealed with the tx key and every byte received opened with the rx key
 * (AES-128-GCM, TLS 1.3 records). Nothing may have been received past the handshake
 * yet beyond what is still queued in the socket.
 */
int arepl_sock_enable_tls(struct socket *sock, const u8 *tx_key, const u8 *tx_salt,
			  const u8 *tx_iv, const u8 *rx_key, const u8 *rx_salt,
			  const u8 *rx_iv)
{
	struct tls12_crypto_info_aes_gcm_128 info;
	int err;

	err = sock->ops->setsockopt(sock, SOL_TCP, TCP_ULP, KERNEL_SOCKPTR("tls"),
				    sizeof("tls"));
	if (err)
		return err;
	arepl_tls_info(&info, tx_key, tx_salt, tx_iv);
	err = sock->ops->setsockopt(sock, SOL_TLS, TLS_TX, KERNEL_SOCKPTR(&info),
				    sizeof(info));
	if (!err) {
		arepl_tls_info(&info, rx_key, rx_salt, rx_iv);
		err = sock->ops->setsockopt(sock, SOL_TLS, TLS_RX, KERNEL_SOCKPTR(&info),
					    sizeof(info));
	}
	memzero_explicit(&info, sizeof(info));
	return err;
}

/*
 * Copies the payload of the logon key `description`, as the calling process finds it
 * in its keyrings, into buf. Returns its length, or -ENOKEY, -EKEYREVOKED,
 * -EKEYEXPIRED, -EMSGSIZE (longer than buf_len).
 */
int arepl_logon_key_read(const char *description, u8 *buf, size_t buf_len)
{
	const struct user_key_payload *payload;
	struct key *key;
	int ret;

	key = request_key(&key_type_logon, description, NULL);
	if (IS_ERR(key))
		return PTR_ERR(key);
	down_read(&key->sem);
	payload = user_key_payload_locked(key);
	if (!payload) {
		ret = -EKEYREVOKED;
	} else if (payload->datalen > buf_len) {
		ret = -EMSGSIZE;
	} else {
		memcpy(buf, payload->data, payload->datalen);
		ret = payload->datalen;
	}
	up_read(&key->sem);
	key_put(key);
	return ret;
}

/* HMAC-SHA256 under key of the concatenation of count parts, into out (32 bytes). */
int arepl_hmac_sha256(const u8 *key, size_t key_len, const u8 *const *parts,
		      const size_t *part_lens, size_t count, u8 *out)
{
	struct crypto_shash *tfm;
	size_t i;
	int err;

	tfm = crypto_alloc_shash("hmac(sha256)", 0, 0);
	if (IS_ERR(tfm))
		return PTR_ERR(tfm);
	err = crypto_shash_setkey(tfm, key, key_len);
	if (!err) {
		SHASH_DESC_ON_STACK(desc, tfm);

		desc->tfm = tfm;
		err = crypto_shash_init(desc);
		for (i = 0; !err && i < count; i++)
			err = crypto_shash_update(desc, parts[i], part_lens[i]);
		if (!err)
			err = crypto_shash_final(desc, out);
		shash_desc_zero(desc);
	}
	crypto_free_shash(tfm);
	return err;
}

/*
 * Synchronous I/O on a held device (the spill log), through dm-io: it splits the
 * buffer into bios and handles vmalloc memory (cache maintenance included).
 */
struct dm_io_client *arepl_io_client_create(void)
{
	struct dm_io_client *client = dm_io_client_create();

	return IS_ERR(client) ? NULL : client;
}

void arepl_io_client_destroy(struct dm_io_client *client)
{
	dm_io_client_destroy(client);
}

/*
 * Reads or writes len bytes (a multiple of 512) at byte offset on bdev. A write with
 * AREPL_IO_FUA is on stable storage when this returns; with AREPL_IO_PREFLUSH too,
 * after everything written before it.
 */
int arepl_sync_io(struct dm_io_client *client, struct block_device *bdev,
		  u64 offset, void *buf, size_t len, bool write, u32 durability)
{
	struct dm_io_region region = {
		.bdev = bdev,
		.sector = offset >> SECTOR_SHIFT,
		.count = len >> SECTOR_SHIFT,
	};
	struct dm_io_request req = {
		.bi_opf = write ? REQ_OP_WRITE | REQ_SYNC : REQ_OP_READ,
		.mem.type = is_vmalloc_addr(buf) ? DM_IO_VMA : DM_IO_KMEM,
		.mem.ptr.addr = buf,
		.client = client,
	};
	unsigned long error_bits = 0;
	int ret;

	if ((offset | len) & (SECTOR_SIZE - 1))
		return -EINVAL;
	if (write && (durability & AREPL_IO_FUA))
		req.bi_opf |= REQ_FUA;
	if (write && (durability & AREPL_IO_PREFLUSH))
		req.bi_opf |= REQ_PREFLUSH;
	ret = dm_io(&req, 1, &region, &error_bits, IOPRIO_DEFAULT);
	if (!ret && error_bits)
		ret = -EIO;
	return ret;
}

u64 arepl_bdev_bytes(struct block_device *bdev)
{
	return bdev_nr_bytes(bdev);
}

void arepl_dm_set_max_io_len(struct dm_target *ti, u32 sectors)
{
	ti->max_io_len = sectors;
}

/* Deferred bios are accounted when submitted (dm_submit_bio_remap), not at map. */
void arepl_dm_set_accounts_remapped_io(struct dm_target *ti)
{
	ti->accounts_remapped_io = true;
}

/*
 * The target's io_hints: a write's pages must not change while it is in flight, as
 * its payload may be copied from them in map (file systems then wait for writeback
 * before changing a page, as for checksumming devices).
 */
void arepl_dm_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	limits->features |= BLK_FEAT_STABLE_WRITES;
}

/*
 * Whether the mapped device's disk has been added. Device-mapper adds it once the
 * device's first table is loaded, with that table's limits, so it is not yet while
 * that first table is constructed.
 */
bool arepl_dm_disk_added(struct dm_target *ti)
{
	return disk_live(dm_disk(dm_table_get_md(ti->table)));
}

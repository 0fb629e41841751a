/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for the Rust side of dm-arepl: the kernel exposes these as static
 * inline functions or macros, which Rust cannot call.
 */
#ifndef AREPL_HELPERS_H
#define AREPL_HELPERS_H

#include <linux/blk_types.h>

struct block_device;

unsigned int arepl_bio_op(const struct bio *bio);
bool arepl_bio_is_preflush(const struct bio *bio);
bool arepl_bio_is_fua(const struct bio *bio);
sector_t arepl_bio_sector(const struct bio *bio);
void arepl_bio_set_sector(struct bio *bio, sector_t sector);
unsigned int arepl_bio_size(const struct bio *bio);
void arepl_bio_set_dev(struct bio *bio, struct block_device *bdev);

#endif

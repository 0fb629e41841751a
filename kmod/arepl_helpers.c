// SPDX-License-Identifier: GPL-2.0
/*
 * Out-of-line copies of static inline bio accessors, for the Rust side of dm-arepl.
 */
#include <linux/bio.h>

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

void arepl_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

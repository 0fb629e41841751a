/* SPDX-License-Identifier: GPL-2.0 */
/* Everything the module's own bindgen run turns into Rust (see Kbuild). */
#include <linux/blk_types.h>
#include <linux/device-mapper.h>
#include "arepl_helpers.h"

// SPDX-License-Identifier: GPL-2.0
/*
 * Example cumulative livepatch, level 1: what /proc/cmdline shows.
 *
 * Written in the upstream livepatch style (see the kernel's
 * samples/livepatch): replacement functions, a klp_func table per patched
 * object, and one klp_patch with .replace = true so that a later level takes
 * over from this one atomically.
 */
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>

static int example_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "nonstop example: level 1\n");
	return 0;
}

static struct klp_func vmlinux_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = example_cmdline_proc_show,
	},
	{}
};

static struct klp_object objects[] = {
	{
		/* .name NULL: the function lives in vmlinux */
		.funcs = vmlinux_funcs,
	},
	{}
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objects,
	.replace = true,
};

static int example_init(void)
{
	return klp_enable_patch(&patch);
}

static void example_exit(void)
{
}

module_init(example_init);
module_exit(example_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");

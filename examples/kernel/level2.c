// SPDX-License-Identifier: GPL-2.0
/*
 * Example cumulative livepatch, level 2: everything level 1 changed (with
 * level 2's text) plus what /proc/loadavg shows. Loading it replaces level 1
 * atomically: when its transition completes the kernel drops level 1's patch
 * and nonstop unloads level 1's module.
 */
#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>

static int example_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "nonstop example: level 2\n");
	return 0;
}

static int example_loadavg_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "0.00 0.00 0.00 1/1 1 nonstop example: level 2\n");
	return 0;
}

static struct klp_func vmlinux_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = example_cmdline_proc_show,
	},
	{
		.old_name = "loadavg_proc_show",
		.new_func = example_loadavg_proc_show,
	},
	{}
};

static struct klp_object objects[] = {
	{
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

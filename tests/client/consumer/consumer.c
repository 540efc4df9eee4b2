/* SPDX-License-Identifier: MIT */
/*
 * The smallest libmoe application: checks that the library it runs against
 * is the one whose header it was compiled with, and prints its version. It
 * needs no daemon; it is built and run by it_install_package.sh against an
 * installed libmoe, once through CMake and once through pkg-config.
 */
#include <moe.h>
#include <stdio.h>

int main(void)
{
	struct moe_client_opts opts;

	if (moe_version_number() != MOE_VERSION_NUMBER) {
		fprintf(stderr, "header %d, library %u\n", MOE_VERSION_NUMBER,
			moe_version_number());
		return 1;
	}
	moe_client_opts_init(&opts);
	if (opts.size != sizeof(opts) || moe_strerror(-1) == NULL)
		return 1;
	printf("%s\n", moe_version_string());
	return 0;
}

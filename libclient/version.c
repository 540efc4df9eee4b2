/* SPDX-License-Identifier: MIT */
/*
 * version: the library's own version, so that a caller can compare the
 * moe.h it was compiled with (MOE_VERSION_NUMBER) with the libmoe.so it runs
 * against. The values are the header's as this library was built.
 */
#include "moe.h"

#define MOE_STR_(_x) #_x
#define MOE_STR(_x) MOE_STR_(_x)

MOE_API unsigned moe_version_number(void)
{
	return MOE_VERSION_NUMBER;
}

MOE_API const char *moe_version_string(void)
{
	return MOE_STR(MOE_VERSION_MAJOR) "." MOE_STR(MOE_VERSION_MINOR) "." MOE_STR(
		MOE_VERSION_PATCH);
}

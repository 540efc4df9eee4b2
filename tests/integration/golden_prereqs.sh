# SPDX-License-Identifier: MIT
#
# Sourced by the golden integration scripts: exit 77 (skip) unless $golden
# holds the cases and check.py, and Debian's python3 has numpy for it.
if [ ! -d "$golden/cases" ] || [ ! -f "$golden/check.py" ]; then
	echo "skip: no golden cases or check.py in $golden"
	exit 77
fi
# check.py needs numpy from Debian's python3 (a python3 earlier in PATH may lack it)
if ! /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
	echo "skip: /usr/bin/python3 has no numpy (apt-get install python3-numpy)"
	exit 77
fi

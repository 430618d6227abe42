#!/bin/sh
# embed.sh FILE [NAME] -- prints FILE as a C byte array named NAME (default
# demo_html), so web assets ship inside the binary, and NAME_etag, a quoted
# HTTP entity tag made of the file's CRC and size (cksum), for caching.
# A byte array (not a string literal) avoids ISO C's 4095-byte string limit
# and trigraphs.
set -e
name=${2:-demo_html}
set -- "$1" $(cksum < "$1")
printf '/* generated from %s by web/embed.sh -- do not edit */\n' "$1"
printf '#define %s_etag "\\"%x-%x\\""\n' "$name" "$2" "$3"
printf 'static const unsigned char %s[] = {\n' "$name"
od -An -v -tu1 "$1" | sed -e 's/  */,/g' -e 's/^,//' -e 's/$/,/'
printf '};\n'

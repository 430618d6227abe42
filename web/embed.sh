#!/bin/sh
# embed.sh FILE -- prints FILE as a C byte array named demo_html, so the demo
# page ships inside the binary.  A byte array (not a string literal) avoids
# ISO C's 4095-byte string limit and trigraphs.
set -e
printf '/* generated from %s by web/embed.sh -- do not edit */\n' "$1"
printf 'static const unsigned char demo_html[] = {\n'
od -An -v -tu1 "$1" | sed -e 's/  */,/g' -e 's/^,//' -e 's/$/,/'
printf '};\n'

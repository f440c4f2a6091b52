/*
 * sendarixctl: the operators' CLI. Everything is in ctl_*.c; main only
 * hands over the command line and the standard streams.
 */
#include "ctl.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    return ctl_main(argc, argv, stdout, stderr);
}

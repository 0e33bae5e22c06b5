/* version.h - the one place jobd's version is written. */
#ifndef JOBD_VERSION_H
#define JOBD_VERSION_H

#define JOBD_VERSION "0.1.0"

#endif

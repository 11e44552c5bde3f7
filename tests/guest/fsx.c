/*
 * fsx.c: an fsx-style file system exerciser, run inside the test guest on a 9P mount.
 *
 * Random operations on one file (writes and reads at random offsets around block
 * boundaries, extending writes that leave holes, truncates up and down, fsyncs, closes and
 * reopens, and with -m reads and writes through mmap) are mirrored in a model held in
 * memory; every read is compared with the model, and the whole file after each truncate
 * and at the end.  Usage: fsx [-m] [-n ops] [-s seed] [-l maxlen] file
 * Prints "fsx ok: N ops" and exits 0, or names the first difference and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned char *model, *buf;
static long flen, maxlen = 256 * 1024;
static int fd, usemmap;
static const char *path;
static unsigned long long rnd_state;

static unsigned long rnd(void)
{
	rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned long)(rnd_state >> 33);
}

static void fail(long op, const char *what, long off, long len)
{
	fprintf(stderr, "fsx FAIL: op %ld: %s at offset %ld length %ld (file %ld bytes): %s\n",
		op, what, off, len, flen, strerror(errno));
	exit(1);
}

/* An offset near a block boundary half the time: that is where file systems slip. */
static long pick(long limit)
{
	if (limit <= 0)
		return 0;
	if (rnd() % 2) {
		long b = 16384 * (long)(rnd() % (limit / 16384 + 1));
		long o = b + (long)(rnd() % 64) - 32;
		if (o >= 0 && o < limit)
			return o;
	}
	return (long)(rnd() % limit);
}

static void check(long op, long off, long len, const unsigned char *got)
{
	for (long i = 0; i < len; i++)
		if (got[i] != model[off + i]) {
			fprintf(stderr, "fsx FAIL: op %ld: byte %ld is 0x%02x, expected 0x%02x\n",
				op, off + i, got[i], model[off + i]);
			exit(1);
		}
}

static void readall(long op)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		fail(op, "fstat", 0, 0);
	if (st.st_size != flen) {
		fprintf(stderr, "fsx FAIL: op %ld: size %ld, expected %ld\n", op, (long)st.st_size, flen);
		exit(1);
	}
	if (pread(fd, buf, flen, 0) != flen)
		fail(op, "read of the whole file", 0, flen);
	check(op, 0, flen, buf);
}

int main(int argc, char **argv)
{
	long nops = 2000, seed = 1;
	int c;
	while ((c = getopt(argc, argv, "mn:s:l:")) != -1) {
		if (c == 'm') usemmap = 1;
		else if (c == 'n') nops = atol(optarg);
		else if (c == 's') seed = atol(optarg);
		else if (c == 'l') maxlen = atol(optarg);
		else return 2;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: fsx [-m] [-n ops] [-s seed] [-l maxlen] file\n");
		return 2;
	}
	path = argv[optind];
	rnd_state = (unsigned long long)seed;
	model = calloc(maxlen, 1);
	buf = malloc(maxlen);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		fail(0, "open", 0, 0);
	for (long op = 1; op <= nops; op++) {
		long kind = rnd() % 100, off, len;
		if (kind < 35) {				/* write, maybe past the end */
			off = pick(maxlen - 1);
			len = 1 + (long)(rnd() % (maxlen - off < 40000 ? maxlen - off : 40000));
			for (long i = 0; i < len; i++)
				buf[i] = (unsigned char)(rnd() % 251 + 1);
			if (pwrite(fd, buf, len, off) != len)
				fail(op, "write", off, len);
			memcpy(model + off, buf, len);
			if (off + len > flen)
				flen = off + len;
		} else if (kind < 70) {			/* read */
			if (flen == 0)
				continue;
			off = pick(flen);
			len = 1 + (long)(rnd() % (flen - off));
			if (pread(fd, buf, len, off) != len)
				fail(op, "read", off, len);
			check(op, off, len, buf);
		} else if (kind < 80) {			/* truncate, up or down */
			long to = pick(maxlen);
			if (ftruncate(fd, to) < 0)
				fail(op, "truncate", to, 0);
			if (to < flen)
				memset(model + to, 0, flen - to);
			flen = to;
			readall(op);
		} else if (kind < 85) {			/* fsync */
			if (fsync(fd) < 0)
				fail(op, "fsync", 0, 0);
		} else if (kind < 90) {			/* close and open again */
			if (close(fd) < 0)
				fail(op, "close", 0, 0);
			fd = open(path, O_RDWR);
			if (fd < 0)
				fail(op, "reopen", 0, 0);
		} else if (usemmap && flen > 0) {	/* through mmap */
			off = pick(flen);
			len = 1 + (long)(rnd() % (flen - off));
			unsigned char *m = mmap(NULL, flen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (m == MAP_FAILED)
				fail(op, "mmap", 0, flen);
			if (kind < 95) {
				check(op, off, len, m + off);
			} else {
				for (long i = 0; i < len; i++)
					m[off + i] = model[off + i] = (unsigned char)(rnd() % 251 + 1);
				if (msync(m, flen, MS_SYNC) < 0)
					fail(op, "msync", off, len);
			}
			munmap(m, flen);
		}
	}
	readall(nops);
	close(fd);
	printf("fsx ok: %ld ops, %ld bytes at the end\n", nops, flen);
	return 0;
}

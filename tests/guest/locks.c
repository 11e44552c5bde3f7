/*
 * locks.c: POSIX record locks (fcntl F_SETLK, F_GETLK) between two processes on one file,
 * run inside the test guest on a 9P mount (9P2000.L carries them as Tlock and Tgetlock).
 * Usage: locks file [other]: the child opens `other` (the same file through a second mount,
 * so that only the server can see the parent's lock; it then reports the holder's pid as its
 * own way, so that is not checked).  Prints "locks ok" and exits 0, or says what went wrong
 * and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int setlk(int fd, short type, off_t start, off_t len)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, F_SETLK, &fl);
}

static int fail(const char *what)
{
	fprintf(stderr, "locks FAIL: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	int fd, up[2], down[2], status;
	char c;
	if (argc != 2 && argc != 3)
		return 2;
	const char *other = argv[argc - 1];
	fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0)
		return fail("open");
	if (setlk(fd, F_WRLCK, 0, 100) < 0)
		return fail("parent's write lock");
	if (pipe(up) < 0 || pipe(down) < 0)
		return fail("pipe");
	pid_t kid = fork();
	if (kid == 0) {
		int k = open(other, O_RDWR);
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
		if (setlk(k, F_WRLCK, 50, 10) == 0)
			_exit(10);			/* should have been refused */
		if (fcntl(k, F_GETLK, &fl) < 0 || fl.l_type != F_WRLCK
		    || (argc == 2 && fl.l_pid != getppid()))
			_exit(11);			/* should name the parent's lock */
		if (setlk(k, F_WRLCK, 200, 10) < 0)
			_exit(12);			/* beside it: free */
		write(up[1], "1", 1);
		read(down[0], &c, 1);		/* the parent unlocks */
		if (setlk(k, F_WRLCK, 50, 10) < 0)
			_exit(13);
		_exit(0);
	}
	read(up[0], &c, 1);
	if (setlk(fd, F_UNLCK, 0, 0) < 0)
		return fail("unlock");
	write(down[1], "1", 1);
	if (waitpid(kid, &status, 0) < 0)
		return fail("wait");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "locks FAIL: child step %d\n", WEXITSTATUS(status));
		return 1;
	}
	printf("locks ok\n");
	return 0;
}

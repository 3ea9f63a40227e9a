/*
 * The pod sandbox ("pause") process for the test node's kubelet: it holds the
 * pod's namespaces open and does nothing else. PID 1 of the sandbox, so it
 * also reaps any zombie re-parented to it. SIGTERM/SIGINT end it at once with
 * status 0 (without that handler PID 1 ignores them and every pod deletion
 * would wait for the runtime's SIGKILL timeout).
 *
 * Built with `gcc -static` into an image that holds only this binary.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
	(void)sig;
	_exit(0);
}

static void reap(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static int on(int sig, void (*handler)(int)) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
	if (argc == 2 && strcmp(argv[1], "-v") == 0) {
		puts("podmeter test pause");
		return 0;
	}
	if (on(SIGTERM, quit) || on(SIGINT, quit) || on(SIGCHLD, reap)) {
		perror("pause: sigaction");
		return 1;
	}
	for (;;)
		pause();
}

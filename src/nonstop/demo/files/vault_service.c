/* vault_service: a small multithreaded loopback service. One line in,
 * "GET N", one line out: vault_record(N). Usage: vault_service PORT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *vault_record(int index);

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    FILE *in = fdopen(fd, "r");
    char line[128];
    while (in && fgets(line, sizeof line, in)) {
        int index;
        char reply[256];
        if (sscanf(line, "GET %d", &index) == 1)
            snprintf(reply, sizeof reply, "%s\n", vault_record(index));
        else
            snprintf(reply, sizeof reply, "error: say GET N\n");
        if (write(fd, reply, strlen(reply)) < 0)
            break;
    }
    if (in)
        fclose(in);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (bind(server, (struct sockaddr *)&address, sizeof address) || listen(server, 64) ||
        getsockname(server, (struct sockaddr *)&address, &length))
        return 1;
    printf("listening %d\n", ntohs(address.sin_port));
    fflush(stdout);
    for (;;) {
        int client = accept(server, NULL, NULL);
        pthread_t thread;
        if (client >= 0 && pthread_create(&thread, NULL, serve, (void *)(long)client) == 0)
            pthread_detach(thread);
    }
}

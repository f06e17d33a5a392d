/*
 * cvisor-vmm's control API (served with --api-sock PATH): the routes and what they do to the
 * running VM. Request/response conventions are those of src/api/http.h.
 */
#ifndef CVISOR_VMM_API_H
#define CVISOR_VMM_API_H

#include "http.h"

struct vm;

/* The routing function handed to api_server_start, with the VM as context. */
void vmm_api_route(void *vm, const struct api_request *req, struct api_response *resp);

/* PATCH /vm and PUT /snapshot/create (api_vm.c); false if the path is not one of them. */
bool vmm_api_vm_route(struct vm *vm, const struct api_request *req, struct api_response *resp);

/* /cvisor/migrate (api_migrate.c); false if the path is not one of its routes. */
bool vmm_api_migrate_route(struct vm *vm, const struct api_request *req,
			   struct api_response *resp);

#endif

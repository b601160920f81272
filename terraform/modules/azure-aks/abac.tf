# ABAC conditions (version 2.0) that limit each workload's role assignment on the skiff file system to
# its own folders (workload_storage_access). They depend on variables only, so they can be evaluated
# and checked without a cloud (tests/unit/test_terraform.py does).
#
# A clause "!(action) OR (allowed paths)" lets the action through only on the listed folders; reading,
# listing and, for writers, writing, adding, deleting and renaming each get one clause.

locals {
  blob_action = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
  blob_path   = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]"
  blob_prefix = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:prefix]"

  storage_conditions = {
    for k, w in var.workload_storage_access : k => join(" AND ", compact([
      "((!(ActionMatches{'${local.blob_action}/read'} AND NOT SubOperationMatches{'Blob.List'})) OR (${join(" OR ", flatten([for p in w.read_prefixes : ["${local.blob_path} StringEquals '${p}'", "${local.blob_path} StringStartsWith '${p}/'"]]))}))",
      "((!(ActionMatches{'${local.blob_action}/read'} AND SubOperationMatches{'Blob.List'})) OR (${join(" OR ", flatten([for p in w.read_prefixes : ["${local.blob_prefix} StringEquals '${p}'", "${local.blob_prefix} StringStartsWith '${p}/'"]]))}))",
      length(w.write_prefixes) == 0 ? "" : "((!(ActionMatches{'${local.blob_action}/write'}) AND !(ActionMatches{'${local.blob_action}/add/action'}) AND !(ActionMatches{'${local.blob_action}/delete'}) AND !(ActionMatches{'${local.blob_action}/move/action'})) OR (${join(" OR ", flatten([for p in w.write_prefixes : ["${local.blob_path} StringEquals '${p}'", "${local.blob_path} StringStartsWith '${p}/'"]]))}))",
    ]))
  }
}

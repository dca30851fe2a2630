import { main } from "../../kit/server.ts";
import { notificationService } from "./service.ts";

await main(notificationService);
